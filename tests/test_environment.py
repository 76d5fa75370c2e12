"""The Python environment built by scripts/setup.sh: CPU torch, a working torchvision, no CUDA."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys


def test_torchvision_nms_runs_on_cpu() -> None:
    import torch
    import torchvision

    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # overlaps box 1 (IoU 0.68) but scores lower: suppressed
            [1.0, 1.0, 11.0, 11.0],
            [20.0, 20.0, 30.0, 30.0],  # disjoint: kept
            [1.0, 1.0, 10.0, 10.0],  # inside box 1 (IoU 0.81): suppressed
        ]
    )
    scores = torch.tensor([0.8, 0.9, 0.7, 0.6])
    keep = torchvision.ops.nms(boxes, scores, iou_threshold=0.5)
    assert keep.dtype == torch.int64
    assert keep.tolist() == [1, 2]
    # A looser threshold keeps box 0 too (0.68 < 0.7), still ordered by score.
    assert torchvision.ops.nms(boxes, scores, iou_threshold=0.7).tolist() == [1, 0, 2]


def test_torchvision_image_extension_loads() -> None:
    import torch
    import torchvision.io

    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    image[0, 4:12, 4:12] = 200
    decoded = torchvision.io.decode_jpeg(torchvision.io.encode_jpeg(image))
    assert decoded.shape == (3, 16, 16)
    assert abs(int(decoded[0, 8, 8]) - 200) < 20


def test_pinned_cpu_torch_and_model_libraries_import() -> None:
    import torch

    assert torch.__version__.split("+")[0] == "2.13.0"
    assert torch.version.cuda is None, "expected the CPU build of torch"
    assert not torch.cuda.is_available()

    import segmentation_models_pytorch  # noqa: F401
    import timm  # noqa: F401


def test_importing_labelloop_does_not_import_torch() -> None:
    code = "import sys, labelloop; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_no_cuda_packages_installed() -> None:
    names = {
        re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "")).lower()
        for dist in importlib.metadata.distributions()
    }
    cuda = sorted(n for n in names if n.startswith("nvidia") or "cuda" in n or n == "triton")
    assert cuda == [], f"CUDA packages installed (a non-CPU torch slipped in?): {cuda}"
