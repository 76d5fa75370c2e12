"""The bundled ImageNet weights load strictly into timm's tf_efficientnet_lite0/lite2 and still recognise a cat."""

import numpy as np
import pytest

from labelloop.errors import InvalidInput


@pytest.mark.parametrize("model_name", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_lite_wheel_weights_classify_chelsea_as_a_cat(model_name):
    torch = pytest.importorskip("torch")
    from skimage.data import chelsea

    from labelloop.ml.pretrained import LITE_WHEELS, create_timm_model, normalisation

    model = create_timm_model(model_name, num_classes=1000).eval()  # strict: every renamed key fits
    mean, std = normalisation(model_name)
    size = LITE_WHEELS[model_name].image_size
    image = torch.tensor(np.asarray(chelsea())).permute(2, 0, 1).float()[None] / 255
    image = torch.nn.functional.interpolate(image, size=(size, size), mode="bilinear", antialias=True)
    image = (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    with torch.no_grad():
        top = model(image).softmax(1).topk(3).indices[0].tolist()
    assert top[0] in (281, 282, 285)  # tabby, tiger cat, Egyptian cat


def test_lite2_reads_images_at_its_own_size_and_lite0_at_224():
    from labelloop.ml.embeddings import Embedder

    assert Embedder("tf_efficientnet_lite2").image_size == 260
    assert Embedder().image_size == 224 and Embedder("resnet18", "w.pth").image_size == 224
    assert Embedder("tf_efficientnet_lite2", image_size=300).image_size == 300


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
