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


def test_a_headless_masked_encoder_continues_mlm_with_a_fresh_head_and_says_so():
    from transformers import BertConfig, GPT2Config

    from xbench.errors import XbenchError
    from xbench.stages.lm import has_lm_head, lm_objective_of

    headless = BertConfig(architectures=["BertModel"])  # how all-MiniLM-L6-v2 is saved
    assert lm_objective_of(headless) == "mlm" and not has_lm_head(headless)
    full = BertConfig(architectures=["BertForMaskedLM"])
    assert lm_objective_of(full) == "mlm" and has_lm_head(full)
    assert lm_objective_of(GPT2Config(architectures=["GPT2LMHeadModel"])) == "clm"
    with pytest.raises(XbenchError, match="masked or a causal LM"):
        lm_objective_of(GPT2Config(architectures=["GPT2Model"]))
