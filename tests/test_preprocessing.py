"""model.transforms() / zoo.transforms(name): the card's preprocessing as a torchvision transform, equal to what the
DataModule fed the model (checked on the real data where it is present)."""

import pytest
import torch
from PIL import Image

import zoo
from conftest import SHARED_DATA

CIFAR_TEST = SHARED_DATA / "cifar10-jpg" / "test"
needs_cifar = pytest.mark.skipif(not CIFAR_TEST.is_dir(), reason=f"needs the real CIFAR-10 JPEGs in {CIFAR_TEST}")


@pytest.mark.parametrize("name,shape", [("cifar_cnn_cifar10", (3, 32, 32)), ("efficientnet_lite0_hymenoptera",
                                        (3, 224, 224)), ("cifar_cnn_fashion_mnist", (1, 32, 32)),
                                        ("vae_mnist", (1, 28, 28)), ("pix2pix_cifar_edges", (1, 32, 32))])
def test_every_image_checkpoint_has_its_transform(name, shape):
    image = Image.fromarray(torch.randint(0, 256, (40, 50, 3), dtype=torch.uint8).numpy())
    model = zoo.load(name)
    x = model.transforms()(image)
    assert tuple(x.shape) == shape and x.dtype == torch.float32
    with torch.no_grad():
        assert torch.isfinite(model(x[None])).all()


@pytest.mark.parametrize("name", ["char_lstm_tinyshakespeare_3min", "lstm_forecaster_airline", "dcgan_fashion_mnist"])
def test_non_image_models_say_what_they_take(name):
    with pytest.raises(ValueError, match="not an image"):
        zoo.transforms(name)


@needs_cifar
def test_cifar_transform_reproduces_the_card_accuracy():
    """500 official test JPEGs through model.transforms(): accuracy within sampling error of the card's 81 %."""
    model = zoo.load("cifar_cnn_cifar10")
    classes = model.zoo_card["classes"]
    images, labels = [], []
    for label, cls in enumerate(classes):
        for path in sorted((CIFAR_TEST / cls).iterdir())[:50]:
            with Image.open(path) as image:
                images.append(model.transforms()(image))
            labels.append(label)
    with torch.no_grad():
        acc = (model(torch.stack(images)).argmax(1) == torch.tensor(labels)).float().mean().item()
    assert abs(acc - model.zoo_card["metrics"]["test/acc"]) < 0.06, acc


@needs_cifar
def test_pix2pix_transform_is_the_datamodules_input():
    from zoo.datamodules.paired import PairedImageDataModule

    dm = PairedImageDataModule("cifar10-jpg", data_dir=str(SHARED_DATA), layout="edges", load_size=32, crop_size=32)
    dm.setup("test")
    path = dm.datasets["test"].items[0] if hasattr(dm.datasets["test"], "items") else None
    if path is None:
        pytest.skip("the paired dataset does not expose its files")
    a, _ = dm.datasets["test"][0][:2]
    with Image.open(path if not isinstance(path, tuple) else path[0]) as image:
        x = zoo.transforms("pix2pix_cifar_edges")(image)
    assert torch.allclose(x, a, atol=1 / 64)
