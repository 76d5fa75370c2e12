"""The detector's `precision` (issue 18): bf16 autocast or float32 ("auto": float32 for now, through the U-Net's
helpers), stored with the version, refused when unknown; the layers whose outputs become boxes stay float32."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from labelloop.errors import InvalidInput
from labelloop.ml.detection import BoxDetector
from labelloop.ml.detection.network import Float32Conv2d, Float32Linear, TrainingFloat32Conv2d
from labelloop.ml.unet import training
from test_detector import FAST, SIZE, drawn_shapes


def _dtypes_seen(detector: BoxDetector) -> dict[str, set]:
    """Output dtypes of a backbone convolution and of the box predictor in training steps (gradients recorded)."""
    seen: dict[str, set] = {"backbone": set(), "box deltas": set()}

    def record(name, dtype):
        if torch.is_grad_enabled():
            seen[name].add(dtype)

    first_conv = next(m for m in detector.network_.backbone.body.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda _m, _a, out: record("backbone", out.dtype))
    detector.network_.roi_heads.box_predictor.register_forward_hook(lambda _m, _a, out: record("box deltas",
                                                                                                out[1].dtype))
    return seen


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_both_precisions_train_a_few_steps_and_predict_float_boxes(precision, dtype):
    images, targets = drawn_shapes(10, 0)
    detector = BoxDetector(2, epochs=1, **{**FAST, "eval_period": 1}, threads=1, pretrained=False,
                           calibration_folds=0, precision=precision)
    seen: dict[str, set] = {}
    original = detector._network

    def network_with_hooks():
        detector.network_ = original()
        seen.update(_dtypes_seen(detector))
        return detector.network_

    detector._network = network_with_hooks
    detector.fit(images[:8], targets[:8], images[8:], targets[8:])
    assert detector.summary_["steps"] == 2 and np.isfinite(detector.history_["loss"]).all()
    assert seen["backbone"] == {dtype}  # training autocast to the chosen dtype ...
    assert seen["box deltas"] == {torch.float32}  # ... the box deltas float32 whatever it is
    detector._inference_network().roi_heads.score_thresh = 0.0  # an untrained head scores low: keep every box
    found = detector.predict(images[8:])
    assert all(len(f["boxes"]) for f in found)
    for f in found:
        assert f["boxes"].dtype == np.float64 and np.isfinite(f["boxes"]).all()
        assert (f["boxes"] >= -1e-3).all() and (f["boxes"] <= SIZE + 1e-3).all()


def test_a_bad_precision_is_refused_with_the_choices():
    from labelloop.services.assist.model_kinds.detector import settings

    with pytest.raises(ValueError, match=r"precision 'half' must be one of auto, bf16, fp32 \(auto: fp32\)"):
        BoxDetector(1, precision="half").validate_params()
    with pytest.raises(InvalidInput, match="give auto, bf16 or fp32"):
        settings({"precision": "half", "epochs": 1}, 0.9)
    assert settings({"precision": "BF16", "epochs": 1}, 0.9)["precision"] == "bf16"


def test_auto_is_float32_for_now_and_would_follow_the_cpu_as_the_unets_auto_does(monkeypatch):
    from labelloop.ml.detection import detector as detector_module

    for native in (True, False):
        monkeypatch.setattr(training, "cpu_has_native_bf16", lambda native=native: native)
        assert BoxDetector(1).compute_dtype() is None  # auto: float32 (bf16 lost mAP at equal steps on raccoon)
        assert BoxDetector(1, precision="fp32").compute_dtype() is None
        assert BoxDetector(1, precision="bf16").compute_dtype() == torch.bfloat16  # asked for: honoured
    monkeypatch.setattr(detector_module, "AUTO_PRECISION", "auto")  # the U-Net's rule, through its helpers
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)
    assert BoxDetector(1).compute_dtype() == torch.bfloat16
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    assert BoxDetector(1).compute_dtype() is None


def test_a_saved_detector_keeps_its_precision_and_one_saved_before_it_existed_stays_float32():
    images, targets = drawn_shapes(4, 1)
    detector = BoxDetector(2, epochs=1, **FAST, threads=1, pretrained=False, calibration_folds=0, precision="bf16")
    detector.fit(images, targets)
    assert BoxDetector.from_checkpoint(detector.checkpoint()).precision == "bf16"
    saved = torch.load(io.BytesIO(detector.checkpoint()), weights_only=False)
    del saved["params"]["precision"]
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    assert BoxDetector.from_checkpoint(buffer.getvalue()).precision == "fp32"


def test_the_float32_layers_keep_their_weights_names_and_their_float32_answer():
    network = BoxDetector(1, pretrained=False)._network()
    kinds = {name: type(m) for name, m in network.named_modules()}
    assert kinds["rpn.head.cls_logits"] is Float32Conv2d and kinds["rpn.head.bbox_pred"] is Float32Conv2d
    assert kinds["roi_heads.box_predictor.bbox_pred"] is Float32Linear
    wide = [m for m in network.backbone.body.modules() if isinstance(m, TrainingFloat32Conv2d)]
    assert wide and all(m.kernel_size == (5, 5) and m.groups == m.in_channels for m in wide)
    assert "rpn.head.cls_logits.weight" in network.state_dict()  # the same keys: old checkpoints still load
    plain = torch.nn.Conv2d(8, 8, 5, padding=2, groups=8)
    swapped = torch.nn.Conv2d(8, 8, 5, padding=2, groups=8)
    swapped.load_state_dict(plain.state_dict())
    swapped.__class__ = TrainingFloat32Conv2d
    x = torch.randn(1, 8, 12, 12)
    assert torch.equal(plain(x), swapped(x))  # no autocast: the very same computation
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert swapped(x).dtype == torch.float32  # gradients recorded: float32
        with torch.inference_mode():
            assert swapped(x).dtype == torch.bfloat16  # prediction: the autocast dtype
