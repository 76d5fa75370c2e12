"""The bundled ImageNet weights load strictly into timm's tf_efficientnet_lite0 and still recognise a cat."""

import numpy as np
import pytest

from labelloop.errors import InvalidInput


def test_lite0_wheel_weights_classify_chelsea_as_a_cat():
    torch = pytest.importorskip("torch")
    from skimage.data import chelsea

    from labelloop.ml.pretrained import create_timm_model, normalisation

    model = create_timm_model(num_classes=1000).eval()
    mean, std = normalisation()
    image = torch.tensor(np.asarray(chelsea())).permute(2, 0, 1).float()[None] / 255
    image = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    image = (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    with torch.no_grad():
        top = model(image).softmax(1).topk(3).indices[0].tolist()
    assert top[0] in (281, 282, 285)  # tabby, tiger cat, Egyptian cat


def test_weights_that_do_not_fit_are_refused_with_the_reason(tmp_path):
    torch = pytest.importorskip("torch")
    from labelloop.ml.pretrained import create_timm_model

    path = tmp_path / "wrong.pth"
    torch.save({"conv_stem.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(InvalidInput, match="do not fit.*missing"):
        create_timm_model(weights=path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidInput, match="could not be read"):
        create_timm_model(weights=tmp_path / "junk.pth")
    with pytest.raises(InvalidInput, match="unknown timm model"):
        create_timm_model("no_such_net", weights=path)
