"""torch.hub.load(repo, name, source="local"): every published checkpoint and every registered model."""

from pathlib import Path

import pytest
import torch

import zoo
from zoo.hub import published

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["cifar_resnet_cifar10", "char_lstm_tinyshakespeare_3min"])
def test_published_checkpoints_load_through_torch_hub(name):
    model = torch.hub.load(str(ROOT), name, source="local")
    reference = zoo.load(name)
    assert model.zoo_card == reference.zoo_card and not model.training
    for (k, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), k


def test_every_published_and_registered_name_is_an_entry_point():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    for name in [*published(), *zoo.list_models()]:
        assert callable(getattr(hubconf, name)), name
    assert torch.hub.load(str(ROOT), "cifar_cnn", source="local", num_classes=5).hparams.num_classes == 5
