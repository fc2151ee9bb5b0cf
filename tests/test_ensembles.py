"""zoo.ensemble: the mean of the members' (TTA'd) probabilities, refused for members that cannot be averaged, and
evaluated next to each member by `zoo evaluate a+b`."""

import pytest
import torch

import zoo
from zoo.cli import main
from zoo.ensembles import EnsembleError

PAIR = ["cifar_cnn_cifar10", "cifar_resnet_cifar10"]


def test_ensemble_is_the_mean_of_the_members_probabilities():
    model = zoo.ensemble(PAIR)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = (zoo.load(PAIR[0]).predict_logits(x).softmax(-1) + zoo.load(PAIR[1]).predict_logits(x).softmax(-1)) / 2
        assert torch.allclose(model(x), expected, atol=1e-6)
    assert model.zoo_card["members"] == PAIR and model.zoo_card["classes"][0] == "airplane"


@pytest.mark.parametrize("members,reason", [(["cifar_cnn_cifar10", "cifar_cnn_fashion_mnist"], "differ in"),
                                            (["cifar_cnn_cifar10"], "at least two")])
def test_members_that_cannot_be_averaged_are_refused(members, reason):
    with pytest.raises(EnsembleError, match=reason):
        zoo.ensemble(members)


def test_zoo_evaluate_takes_an_ensemble(cifar_pickles, capsys):
    assert main(["evaluate", "+".join(PAIR), "--data-dir", str(cifar_pickles), "--accelerator", "cpu"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(("cifar_", "model"))]
    names = [parts[0] for parts in lines[1:]]
    assert names == [*PAIR, "+".join(PAIR)] and all(0 <= float(parts[1]) <= 1 for parts in lines[1:])
