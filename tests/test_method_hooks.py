"""Methods may shape fine-tuning (docs/methods/README.md, "Shaping fine-tuning").

A toy method changes all three things a method may change (the head, an extra loss, the training
examples) on the smallest run xbench can make: a 1-layer d=16 BERT saved to a folder, a hand-written
XNLI data root, 2 fine-tuning steps. The same run with the plain `source` method is the control: it
must not see any of it, and must not share its fine-tuned cache entry.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures_results import write_result
from tests.test_clp_method import make_source
from tests.test_preflight import xnli_root
from xbench import registry
from xbench.errors import XbenchError
from xbench.methods.base import FinetuneHooks
from xbench.methods.source import SourceMethod
from xbench.results.schema import load_result

CALLS: dict[str, list[Any]] = {"head": [], "transform": [], "featurized": []}
CHANGES = ["head: toy-head", "extra loss: toy-consistency", "train transform: toy-subset"]


def _head(encoder_path: str, task_type: Any) -> Any:
    CALLS["head"].append(encoder_path)
    model = task_type.build_model(encoder_path)
    model.toy_head = True
    return model


def _consistency(model: Any, batch: dict[str, Any], ctx: Any) -> dict[str, Any]:
    assert getattr(model, "toy_head", False) or getattr(getattr(model, "module", None), "toy_head", False)
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
    return {"toy_consistency": 0.5 + logits.pow(2).mean()}


def _subset(examples: list[Any], seed: int) -> list[Any]:
    CALLS["transform"].append((len(examples), seed))
    picked = random.Random(seed).sample(examples, 40)
    return picked


class ToyHooks(SourceMethod):
    name = "toy-hooks"
    kind = "transfer"

    def finetune_hooks(self, task_type: Any) -> FinetuneHooks:
        return FinetuneHooks(head=_head, head_name="toy-head", extra_loss=_consistency,
                             extra_loss_name="toy-consistency", train_transform=_subset,
                             train_transform_name="toy-subset", fingerprint={"toy": 1})


@pytest.fixture()
def toy_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from xbench.run.orchestrate import RunRequest, run
    from xbench.tasktypes.classification import SentencePairClassification

    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("XBENCH_DATA", raising=False)
    monkeypatch.setitem(registry.METHODS, "toy-hooks",
                        registry.MethodInfo("toy-hooks", "transfer", "a test method", f"{__name__}:ToyHooks"))
    featurize = SentencePairClassification.featurize

    def recording(self: Any, split: Any, tokenizer: Any, *, train: bool) -> Any:
        if train:
            CALLS["featurized"].append((split.lang, list(split.examples)))
        return featurize(self, split, tokenizer, train=train)

    monkeypatch.setattr(SentencePairClassification, "featurize", recording)
    for calls in CALLS.values():
        calls.clear()
    data, model = xnli_root(tmp_path / "data"), make_source(tmp_path / "model", "bert")

    def go(method: str) -> dict[str, Any]:
        req = RunRequest(method=method, task="xnli", langs=["de"], seeds=[1], model=str(model), data_dir=str(data),
                         output_dir=str(tmp_path / "out"), progress=False,
                         overrides={"finetune.max_steps": "2", "finetune.eval_every": "2", "finetune.batch_size": "8"})
        (path,) = run(req)
        return load_result(path)

    return go, tmp_path


def test_a_method_shapes_the_shared_fine_tuning(toy_run) -> None:
    go, tmp = toy_run
    plain = go("source")
    assert CALLS == {"head": [], "transform": [], "featurized": CALLS["featurized"]}  # source: none of it
    plain_train = CALLS["featurized"][0][1]
    CALLS["featurized"].clear()

    toy = go("toy-hooks")
    # The transform got the loaded training examples and the fine-tuning seed; its output was featurised.
    assert CALLS["transform"] == [(len(plain_train), 1)]
    (lang, trained_on), = CALLS["featurized"]
    assert lang == "en" and trained_on == random.Random(1).sample(plain_train, 40) != plain_train[:40]
    # The head built the model that was trained, and the one loaded back from the cache entry.
    assert len(CALLS["head"]) == 2
    # The extra loss was added to the task loss and is recorded beside it.
    ft, plain_ft = toy["compute"]["finetune"][0], plain["compute"]["finetune"][0]
    parts = ft["extra"]["loss_parts"]
    assert set(parts) == {"ce", "toy_consistency"} and parts["toy_consistency"] >= 0.5 and parts["ce"] > 0
    assert "loss_parts" not in plain_ft["extra"]
    # Recorded in the result, and a different fine-tuned model entry from the plain one.
    assert toy["method"]["finetune_changes"] == CHANGES and plain["method"]["finetune_changes"] == []
    assert ft["cache_entry"] != plain_ft["cache_entry"]
    # The same data is recorded for both: the transform is a change of the method, not other data.
    assert toy["task"]["data"] == plain["task"]["data"]

    from xbench.results.aggregate import aggregate
    from xbench.results.schema import iter_results

    rows = {row.method: row for row in aggregate(iter_results(tmp / "out")).values()}
    flag = "fine-tuning changed by the method: " + ", ".join(CHANGES)
    assert flag in rows["toy-hooks"].all_flags()
    assert not any(f.startswith("fine-tuning changed") for f in rows["source"].all_flags())
    from xbench.results.leaderboard import write_leaderboards

    write_leaderboards(tmp / "out", tmp / "lb")
    assert flag in (tmp / "lb" / "xnli.md").read_text()


def test_no_hooks_is_no_change() -> None:
    assert FinetuneHooks().changes() == []
    assert SourceMethod.finetune_hooks is not ToyHooks.finetune_hooks
    with pytest.raises(TypeError, match="needs a name"):
        FinetuneHooks(extra_loss=_consistency).changes()


def test_an_extra_loss_may_not_replace_the_task_loss() -> None:
    import torch

    from xbench.run.finetune import hooked_loss as _hooked_loss

    hooks = FinetuneHooks(extra_loss=lambda m, b, c: {"ce": torch.tensor(1.0)}, extra_loss_name="clash")
    loss, _ = _hooked_loss(lambda m, b, c: {"ce": torch.tensor(2.0)}, hooks)
    with pytest.raises(XbenchError, match="names its term"):
        loss(None, {}, None)


def test_older_result_files_read_as_no_change(tmp_path: Path) -> None:
    path = write_result(tmp_path, "clp", "transfer", 1, {"de": 0.4}, schema_version=3)
    assert load_result(path)["method"]["finetune_changes"] == []
    data = json.loads(path.read_text())
    data["method"]["finetune_changes"] = "head"
    path.write_text(json.dumps(data))
    with pytest.raises(XbenchError, match="finetune_changes"):
        load_result(path)
