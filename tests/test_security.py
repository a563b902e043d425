"""Nothing read from a cache folder runs code (issue 9 B.11).

A planted pickle whose __reduce__ creates a marker file is put in each kind of file xbench reads
back from a cache or work folder: the feature cache, a checkpoint's state.pt and rng.pt, the
selected model best/model.pt, and a model folder's weights. Loading must fail with a clear error or
rebuild the entry, and the marker must never appear. The feature cache also has to give back
exactly what was built, for every task type.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.toy_training import ce_loss, toy_features, toy_model
from tests.test_parsing_tasktype import TREEBANK
from tests.test_words import tokenizer  # noqa: F401  (module-scoped tiny WordPiece tokenizer fixture)
from xbench.data.pair_tsv import PairExample
from xbench.data.sources import Provenance
from xbench.data.squad import QAExample
from xbench.errors import XbenchError
from xbench.cards import get_task
from xbench.runner.batching import FeaturePlan
from xbench.runner.trainer import Runner, TrainArgs
from xbench.tasktypes import base, feature_store
from xbench.tasktypes.base import Split


class Payload:
    """Unpickling this creates `marker`: the proof that a load ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def payload_bytes(marker: Path) -> bytes:
    return pickle.dumps({"features": Payload(marker)})


@pytest.fixture(autouse=True)
def _private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("XBENCH_DATA", raising=False)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Without this, the tests below could pass with a payload that never ran anywhere."""
    m = tmp_path / "live"
    pickle.loads(payload_bytes(m))
    assert m.exists()


# ------------------------------------------------------------------------------- feature cache
PROV = Provenance("local", files=[{"path": "x", "sha256": "0" * 64}])


def _features(kind: str, tmp_path: Path, tok, train: bool):
    """Real features of one task type, through its own featurize (which goes through the cache)."""
    if kind == "classification":
        tt = get_task("xnli").task_type_impl()
        examples = [PairExample("Hamburg is a city in Germany", "Berlin is its capital", 0),
                    PairExample("the players were playing", "the player played well", 2)]
        split = Split("de", "test", examples, PROV)
    elif kind == "extractive_qa":
        tt = get_task("xquad").task_type_impl()
        examples = [QAExample(f"q{i}", "Who wrote songs?", f"Anton Wilhelm von Zuccalmaglio wrote songs in {1900 + i}.",
                              ("Anton Wilhelm",), (0,)) for i in range(3)]
        split = Split("de", "test", examples, PROV)
    elif kind == "parsing":
        tt = get_task("ud").task_type_impl()
        (tmp_path / "en_toy-ud-train.conllu").write_text(TREEBANK, encoding="utf-8")
        split = tt.load("en", "train", tmp_path, for_eval=False)
    else:
        tt = get_task("panx").task_type_impl()
        examples = [(["Anton", "Wilhelm", "von", "Zuccalmaglio", "wrote", "songs"],
                     ["B-PER", "I-PER", "I-PER", "I-PER", "O", "O"]),
                    (["北京", "是", "中国", "的", "首都"], ["B-LOC", "O", "B-LOC", "O", "O"])]
        split = Split("en", "train" if train else "test", examples, PROV)
    return lambda: tt.featurize(split, tok, train=train)


def _same(a, b) -> bool:
    """Equal and of the same types all the way down (a tuple must not come back as a list)."""
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all())
                and b.flags.writeable)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


KINDS = ["classification", "extractive_qa", "parsing", "token_labelling"]


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kind", KINDS)
def test_feature_cache_round_trip_and_second_preparation_reads_it(kind, train, tmp_path, tokenizer, monkeypatch):  # noqa: F811
    calls = {"save": 0, "load": 0}
    real_save, real_load = feature_store.save, feature_store.load

    def save(path, value):
        calls["save"] += 1
        real_save(path, value)

    def load(path):
        calls["load"] += 1
        return real_load(path)

    monkeypatch.setattr(feature_store, "save", save)
    monkeypatch.setattr(feature_store, "load", load)
    featurize = _features(kind, tmp_path, tokenizer, train)
    built = featurize()
    assert calls == {"save": 1, "load": 0} and len(built) > 0
    read = featurize()
    assert calls == {"save": 1, "load": 1}
    assert _same(built, read)
    files = list((tmp_path / "cache" / "features").iterdir())
    assert [p.suffix for p in files] == [".arrow"]
    assert not files[0].read_bytes().startswith(b"\x80")  # not a pickle


def _planted_feature_paths(kind: str, tmp_path: Path, tok, monkeypatch) -> tuple:
    keys: list[dict] = []
    real = base.feature_cache_path

    def spy(key):
        keys.append(key)
        return real(key)

    monkeypatch.setattr(base, "feature_cache_path", spy)
    featurize = _features(kind, tmp_path, tok, True)
    built = featurize()
    return featurize, built, real(keys[0]), base.cache_root() / "features" / f"{base.hash_json(keys[0])}.pkl"


@pytest.mark.parametrize("kind", KINDS)
def test_planted_feature_cache_file_never_runs(kind, tmp_path, tokenizer, marker, monkeypatch):  # noqa: F811
    featurize, built, path, old_name = _planted_feature_paths(kind, tmp_path, tokenizer, monkeypatch)
    # The payload in the entry's own file, and under the name the pickle cache used to read.
    path.write_bytes(payload_bytes(marker))
    old_name.write_bytes(payload_bytes(marker))
    with pytest.warns(UserWarning, match="unreadable.*rebuilding"):
        again = featurize()
    assert not marker.exists()
    assert _same(built, again)
    assert feature_store.load(path) is not None  # rebuilt and rewritten as Arrow


def test_truncated_feature_file_is_rebuilt(tmp_path, tokenizer, monkeypatch):  # noqa: F811
    featurize, built, path, _ = _planted_feature_paths("classification", tmp_path, tokenizer, monkeypatch)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.warns(UserWarning, match="unreadable"):
        assert _same(built, featurize())


# --------------------------------------------------------------------------------- checkpoints
def _plan() -> FeaturePlan:
    return FeaturePlan(toy_features(32), seed=7, batch_size=8, pad_values={"input_ids": 0, "labels": -100})


def _train(work: Path, *, resume: bool = False, select: bool = False):
    args = TrainArgs(lr=1e-3, max_steps=4, seed=3, checkpoint_every=2, progress=False)

    def evaluate(model):
        return {"score": -float(sum(p.detach().abs().sum() for p in model.parameters()))}

    return Runner(args, work, name="toy").fit(toy_model(), _plan(), ce_loss, resume=resume,
                                              evaluate=evaluate if select else None,
                                              select_metric="score" if select else None)


@pytest.mark.parametrize("file", ["state.pt", "rng.pt", "best/model.pt"])
@pytest.mark.parametrize("form", ["torch.save", "raw pickle"])
def test_planted_checkpoint_file_never_runs(file, form, tmp_path, marker):
    work = tmp_path / "w"
    _train(work, select=True)
    target = work / file if file.startswith("best") else work / "checkpoints" / "step-4" / file
    assert target.is_file()
    if form == "torch.save":
        torch.save({"model": Payload(marker), "torch": Payload(marker)}, target)
    else:
        target.write_bytes(payload_bytes(marker))
    with pytest.raises(XbenchError, match=rf"{target.name}: not a checkpoint xbench can load safely"):
        _train(work, resume=True, select=True)
    assert not marker.exists()


def test_checkpoint_round_trip_loads_with_weights_only(tmp_path):
    """The checkpoints xbench writes itself hold only what weights_only=True accepts."""
    work = tmp_path / "w"
    _train(work, select=True)
    ckpt = work / "checkpoints" / "step-4"
    for f in (ckpt / "state.pt", ckpt / "rng.pt", work / "best" / "model.pt"):
        torch.load(f, map_location="cpu", weights_only=True)
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 4


def test_planted_model_weights_never_run(tmp_path, marker):
    """A model folder whose weights are a pickle (pytorch_model.bin) is refused, not unpickled."""
    from transformers import AutoModelForSequenceClassification

    from xbench.loading import load_pretrained

    folder = tmp_path / "model"
    toy_model().save_pretrained(folder)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    torch.save({"bert.embeddings.word_embeddings.weight": Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(Exception):  # noqa: B017  (transformers' own refusal or xbench's message)
        load_pretrained(AutoModelForSequenceClassification, str(folder))
    assert not marker.exists()
