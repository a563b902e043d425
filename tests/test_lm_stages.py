"""Small pieces of the LM pretraining stages (stages/lm.py) not covered by the method tests."""
from __future__ import annotations

import pytest

from xbench.stages.lm import loss_trend


def test_loss_trend_compares_the_first_and_last_tenth():
    t = loss_trend([10.0] * 10 + [5.0] * 80 + [2.0] * 10)
    assert t == {"loss_start": 10.0, "loss_end": 2.0, "loss_decreased": True}
    assert not loss_trend([1.0, 2.0, 3.0])["loss_decreased"]
    assert loss_trend([]) == {"loss_start": None, "loss_end": None, "loss_decreased": False}
    assert loss_trend([4.0, 3.0])["loss_start"] == pytest.approx(4.0)
