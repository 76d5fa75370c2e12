"""Read a labelloop export with the peers' own readers, in a Python that has them (not labelloop's venv).

    PYTHON peer_readers.py labelstudio OUT   # label-studio-sdk: its Converter (to COCO) and brush.decode_rle
    PYTHON peer_readers.py cvat OUT          # datumaro: Dataset.import_from(OUT, "cvat")

Prints one JSON object: image base name -> sorted list of [kind, label, data], where data is the polygon's flat
points, the box's [x0, y0, x1, y1], or the sha256 of the mask's packed bits (np.packbits of the H×W bool array).
label-studio-sdk and datumaro would replace the locked numpy, opencv or pillow in labelloop's venv, so the test
runs this script with the interpreter named by LABELLOOP_LS_SDK_PYTHON / LABELLOOP_DATUMARO_PYTHON.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def mask_digest(mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(np.asarray(mask, bool)).tobytes() + str(mask.shape).encode()).hexdigest()


def label_studio(folder: Path) -> dict:
    from label_studio_sdk.converter import Converter
    from label_studio_sdk.converter.brush import decode_rle

    found = defaultdict(list)
    with tempfile.TemporaryDirectory() as out:
        converter = Converter(config=str(folder / "labeling_config.xml"), project_dir=str(folder),
                              download_resources=False)
        converter.convert_to_coco(str(folder / "tasks.json"), out, is_dir=False)
        coco = json.loads((Path(out) / "result.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {i["id"]: i["file_name"].split("__", 1)[-1] for i in coco["images"]}  # the converter prefixes a hash
    for ann in coco["annotations"]:
        name = Path(files[ann["image_id"]]).name
        if isinstance(ann.get("segmentation"), list) and ann["segmentation"]:
            found[name].extend(["polygon", names[ann["category_id"]], part] for part in ann["segmentation"])
        elif not ann.get("segmentation"):
            x, y, w, h = ann["bbox"]
            found[name].append(["box", names[ann["category_id"]], [x, y, x + w, y + h]])
    for task in json.loads((folder / "tasks.json").read_text()):  # brush masks: LS's own decoder
        name = Path(task["data"]["image"]).name
        for annotation in task.get("annotations", []):
            for result in annotation["result"]:
                if result["type"] == "brushlabels":
                    rgba = decode_rle(result["value"]["rle"])
                    alpha = np.reshape(rgba, [result["original_height"], result["original_width"], 4])[:, :, 3]
                    found[name].append(["mask", result["value"]["brushlabels"][0], mask_digest(alpha > 0)])
    return {name: sorted(shapes, key=str) for name, shapes in found.items()}


def cvat(folder: Path) -> dict:
    from datumaro.components.annotation import AnnotationType
    from datumaro.components.dataset import Dataset

    dataset = Dataset.import_from(str(folder), "cvat")
    labels = dataset.categories()[AnnotationType.label]
    found = defaultdict(list)
    for item in dataset:
        name = Path(item.media.path).name
        for ann in item.annotations:
            label = labels[ann.label].name
            if ann.type == AnnotationType.polygon:
                found[name].append(["polygon", label, [float(v) for v in ann.points]])
            elif ann.type == AnnotationType.bbox:
                found[name].append(["box", label, [ann.x, ann.y, ann.x + ann.w, ann.y + ann.h]])
            elif ann.type == AnnotationType.mask:
                found[name].append(["mask", label, mask_digest(ann.image)])
            elif ann.type == AnnotationType.label:
                found[name].append(["tag", label, None])
    return {name: sorted(shapes, key=str) for name, shapes in found.items()}


if __name__ == "__main__":
    reader = {"labelstudio": label_studio, "cvat": cvat}[sys.argv[1]]
    print(json.dumps(reader(Path(sys.argv[2]))))
