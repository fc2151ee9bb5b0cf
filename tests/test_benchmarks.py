"""The overhead benchmark compares like with like: every arm trains the same model on the same batches."""

from __future__ import annotations

import pytest
import torch

from conftest import benchmark_script

overhead = benchmark_script("overhead")


@pytest.fixture
def short_tiny_run(monkeypatch):
    reg, kwargs, batch, _ = overhead.NETS["tiny"]
    monkeypatch.setitem(overhead.NETS, "tiny", (reg, {**kwargs, "dropout": 0.0}, batch, overhead.WARMUP + 3))


@pytest.mark.filterwarnings("ignore")
def test_overhead_arms_train_the_same_weights(short_tiny_run):
    """If an arm did other work (another loss, schedule or optimizer), its step-time ratio would not measure overhead."""
    results = {
        "hand": overhead.hand("tiny"),
        "lightning": overhead.with_trainer("tiny", False, bare=True),
        "zoo": overhead.with_trainer("tiny", False),
        "zoo_default": overhead.with_trainer("tiny", True),
    }
    reference = results["hand"][1].state_dict()
    start = overhead.make("tiny")[0].state_dict()
    assert any(not torch.equal(start[k], v) for k, v in reference.items()), "the hand arm did not train"
    for arm, (seconds, model) in results.items():
        assert 0 < seconds < float("inf"), arm
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, reference[k], msg=f"{arm}: {k} differs from the hand-written loop's")


@pytest.mark.parametrize("script", ["export_parity", "startup", "quantize_lstm", "pruning", "faults", "newcomer", "plots"])
def test_benchmark_scripts_import(script):
    """The scripts the README quotes import cleanly (an import error fails here, not when someone runs them)."""
    assert callable(benchmark_script(script).main)
