"""Slow: every published checkpoint's card is reproduced on the real data (`pytest -m slow`)."""

import os

import pytest

from conftest import SHARED_DATA
from zoo import hub


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(hub.published()))
def test_published_card_is_reproduced(name, monkeypatch):
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    monkeypatch.setenv("ZOO_DATA_DIR", os.environ.get("ZOO_DATA_DIR") or str(SHARED_DATA))
    for metric, card_value, measured in hub.evaluate(name, accelerator="cpu"):
        assert measured == pytest.approx(card_value, rel=1e-3, abs=1e-3), metric
