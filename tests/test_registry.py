from __future__ import annotations

import pytest

from xbench.errors import ConfigError, XbenchError
from xbench.profiles import load_profile
from xbench.cards import get_task, parse_card, validate_all_cards
from xbench.registry import get_method


def test_xnli_card():
    card = get_task("xnli")
    assert card.version >= 1 and card.metric == "accuracy" and len(card.languages) == 15
    assert set(card.protocols) == {"zero-shot", "translate-train", "in-language", "translate-train-codeswitch"}
    assert card.protocols["translate-train-codeswitch"].code_switch == {"originals": {"lang": "en", "split": "dev-train"}, "p_switch": 0.5}
    assert card.params["labels"] == ["entailment", "neutral", "contradiction"]
    assert card.data["derived_splits"]["dev-train"]["rows"] == [0, 2241]


def test_every_shipped_card_validates():
    cards, problems = validate_all_cards()
    assert problems == [] and "xnli" in cards


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(XbenchError, match="unknown task 'xnlii'; valid tasks: .*xnli"):
        get_task("xnlii")
    with pytest.raises(XbenchError, match="unknown method 'trelmm'; valid methods: .*scratch"):
        get_method("trelmm")
    with pytest.raises(XbenchError, match=r"no language\(s\) xx; valid languages: en, fr"):
        get_task("xnli").check_languages(["de", "xx"])
    with pytest.raises(XbenchError, match="unknown profile 'fast'"):
        load_profile("fast")


def test_card_errors_are_reported_all_at_once(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: other\nversion: one\ntask_type: regression\nlanguages: [en, en]\nprotocols: {}\n")
    with pytest.raises(ConfigError) as info:
        parse_card(bad)
    msg = str(info.value)
    for fragment in ["missing required key 'description'", "'version' must be a int", "task_type 'regression'",
                     "must match the file name", "duplicate languages: en", "'protocols' is empty", "missing required key 'data'"]:
        assert fragment in msg, fragment
    assert len(info.value.problems) >= 7


def test_invalid_yaml_names_the_file(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="x.yaml: not valid YAML"):
        parse_card(bad)
