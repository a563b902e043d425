"""Meta-pretraining and its single-phase baseline (docs/methods/meta.md, "Testable properties"; the
sampler and retrieval properties are in test_sampler.py and test_retrieval.py), the multilingual batch
plan, and the transfer report."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.test_clp_method import toy_root  # noqa: F401  (session fixture)
from xbench import cache
from xbench.stages.blocks import MultilingualBlocks
from xbench.data.sampler import language_probs
from xbench.errors import ConfigError, XbenchError
from xbench.methods.base import RunContext
from xbench.methods.meta import MetaMethod, MetaSingleMethod
from xbench.results.transfer_report import transfer_report
from xbench.profiles import load_profile
from xbench.runner import trainer


@pytest.fixture(scope="module", autouse=True)
def _toy_root_only():
    # A data_dir adds to XBENCH_DATA; these tests read their toy root alone.
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("XBENCH_DATA", raising=False)
        yield

FAST_META = {"total_steps": "8", "batch_size": "4", "seq_len": "16", "vocab_size": "300", "layers": "1",
             "hidden": "16", "heads": "2", "ffn": "32", "warmup_steps": "2", "max_positions": "64"}


def meta_method(root: Path, cls: type = MetaMethod, langs: tuple[str, ...] = ("de",), **params: str):
    ctx = RunContext(profile=load_profile("smoke"), model="unused", data_dir=str(root),
                     params={**FAST_META, **params}, langs=list(langs))
    return cls(ctx)


class OptimizerLog:
    """Every optimizer the runner creates, with its state and learning rate around its first step."""

    def __init__(self, monkeypatch) -> None:
        self.runs: list[dict] = []
        real = trainer._optimizer

        def make(model, args):
            opt = real(model, args)
            run = {"opt": opt, "steps": 0}
            self.runs.append(run)

            def pre(o, *_):
                if run["steps"] == 0:
                    run["state_before_first"] = len(o.state)
                    run["lr_first"] = o.param_groups[0]["lr"]

            def post(o, *_):
                run["steps"] += 1
                if run["steps"] == 1:
                    run["step_counters_after_first"] = {float(s["step"]) for s in o.state.values()}
                run["last_step_counters"] = {float(s["step"]) for s in o.state.values()}

            opt.register_step_pre_hook(pre)
            opt.register_step_post_hook(post)
            return opt

        monkeypatch.setattr(trainer, "_optimizer", make)


@pytest.fixture(scope="module")
def built(toy_root, tmp_path_factory):  # noqa: F811
    """meta and meta-single built once, with the runner's optimizers and the weights around each phase observed."""
    states: dict[str, dict[str, torch.Tensor]] = {}
    real_fit = trainer.Runner.fit

    def fit(runner, model, *a, **kw):
        states[f"{runner.name} start"] = {k: v.clone() for k, v in model.state_dict().items()}
        out = real_fit(runner, model, *a, **kw)
        states[f"{runner.name} end"] = {k: v.clone() for k, v in model.state_dict().items()}
        return out

    cache_root = tmp_path_factory.mktemp("meta-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XBENCH_CACHE", str(cache_root))
        opts = OptimizerLog(mp)
        mp.setattr(trainer.Runner, "fit", fit)
        meta = meta_method(toy_root).build_encoder(None)
        single = meta_method(toy_root, MetaSingleMethod).build_encoder(None)
    return meta, single, opts, states, cache_root


def test_phase2_starts_from_the_exact_phase1_weights(built):
    meta, _, _, states, cache_root = built
    end1, start2 = states["meta phase 1 (en) end"], states["meta phase 2 (en+de) start"]
    assert end1.keys() == start2.keys()
    assert all(torch.equal(end1[k], start2[k]) for k in end1)  # bitwise
    phase1_entry = cache_root / "stages" / meta.provenance["phase1_entry"]
    saved = load_file(phase1_entry / "model.safetensors")
    assert all(torch.equal(saved[k], start2[k]) for k in saved)
    phase1, phase2 = meta.stages[1], meta.stages[2]
    assert phase2["extra"]["start_state_sha256"] == cache.read_entry(phase1_entry)["manifest"]["final_state_sha256"]
    assert phase1["extra"]["phase"] == 1 and phase2["extra"]["phase"] == 2


def test_optimizer_and_schedule_reset_between_phases(built):
    _, _, opts, _, _ = built
    phase1, phase2 = opts.runs[0], opts.runs[1]  # meta's phases; the single-phase run comes third
    assert phase1["last_step_counters"] == {4.0}  # phase 1 really accumulated state...
    assert phase2["opt"] is not phase1["opt"]
    assert phase2["state_before_first"] == 0  # ...and phase 2 starts with none: moments created fresh
    assert phase2["step_counters_after_first"] == {1.0}  # Adam step counter 1
    lr, warmup = MetaMethod.defaults["lr"], int(FAST_META["warmup_steps"])
    assert math.isclose(phase2["lr_first"], lr / warmup)  # warm-up step 0 again
    assert math.isclose(phase1["lr_first"], lr / warmup)


def test_meta_and_single_phase_train_equal_steps_and_tokens(built):
    meta, single, opts, _, _ = built
    train = [s for s in meta.stages if s["kind"] == "train"]
    single_train = [s for s in single.stages if s["kind"] == "train"]
    assert sum(s["optimizer_steps"] for s in train) == sum(s["optimizer_steps"] for s in single_train) == 8
    batch_tokens = 4 * 16
    assert abs(sum(s["tokens_seen"] for s in train) - sum(s["tokens_seen"] for s in single_train)) < batch_tokens
    assert opts.runs[2]["last_step_counters"] == {8.0}
    # Same tokenizer, same sampler: the single phase draws phase 2's batches first.
    assert meta.provenance["tokenizer_entry"] == single.provenance["tokenizer_entry"]
    assert single.provenance["matches"] == meta.key
    assert train[1]["extra"]["sampling_probs"] == single_train[0]["extra"]["sampling_probs"]


def test_encoders_record_retrieval_and_flags(built):
    meta, single, _, _, _ = built
    for enc in (meta, single):
        r = enc.provenance["retrieval"]["de"]
        assert r["pairs"] == 20 and r["lines"] == [80, 99]
        assert 0.0 <= r["mean"] <= 1.0 and math.isclose(r["mean"], (r["xx_to_en"] + r["en_to_xx"]) / 2)
        assert enc.flags["xbench_reconstruction"] and not enc.uses_source_weights
    assert [s["extra"]["role"] for s in meta.stages] == ["tokenizer", "transfer", "transfer"]


def test_multilingual_blocks_one_language_per_batch_with_smoothed_frequencies():
    blocks = {"en": np.arange(900 * 4).reshape(900, 4), "de": np.arange(90 * 4).reshape(90, 4) + 10_000,
              "zh": np.arange(10 * 4).reshape(10, 4) + 20_000}
    sizes = {"en": 9000, "de": 900, "zh": 100}
    plan = MultilingualBlocks(blocks, sizes, alpha=0.5, batch_size=2, seed=3)
    q = language_probs(sizes, 0.5)
    for lang, idx in plan.batches(0):
        ids = plan.collate((lang, idx))["input_ids"]
        assert ids.shape == (2, 4) and set((ids // 10_000).flatten().tolist()) == {["en", "de", "zh"].index(lang)}
    drawn = {lang: 0 for lang in blocks}
    for epoch in range(40):
        for lang, _ in plan.batches(epoch):
            drawn[lang] += 1
    total = sum(drawn.values())
    assert all(abs(drawn[k] / total - q[k]) < 0.01 for k in q)
    # A pure function of (seed, epoch): what a resumed run regenerates.
    again = MultilingualBlocks(blocks, sizes, alpha=0.5, batch_size=2, seed=3)
    assert again.batches(7) == plan.batches(7) and again.batches(8) != plan.batches(7)
    assert plan.drawn(plan.epoch_batches + 5) == {k: sum(1 for lang, _ in (plan.batches(0) + plan.batches(1)[:5])
                                                        if lang == k) for k in blocks}


def test_transfer_report_from_a_result():
    result = {"scores": {"metric": "accuracy", "per_language": {"de": {"accuracy": 0.40}, "zh": {"accuracy": 0.36}}},
              "selection": [{"group": 0, "train_lang": "en", "step": 50, "accuracy": 0.46}],
              "run": {"select_split": "dev-heldout"},
              "model": {"encoders": [{"provenance": {"retrieval": {
                  "de": {"xx_to_en": 0.1, "en_to_xx": 0.2, "mean": 0.15, "pairs": 200}}}}]}}
    rep = transfer_report(result)
    assert rep["english"] == 0.46 and math.isclose(rep["target_mean"], 0.38)
    assert math.isclose(rep["transfer_gap"], 0.08) and rep["retrieval"]["de"] == {"xx_to_en": 0.1, "en_to_xx": 0.2,
                                                                                     "mean": 0.15}
    assert transfer_report({**result, "selection": []})["transfer_gap"] is None


def test_bad_parameters(toy_root):  # noqa: F811
    with pytest.raises(ConfigError) as exc:
        meta_method(toy_root, phase1_share="1.0", alpha="-1", phase1_lang="fr")
    assert "phase1_share" in str(exc.value) and "alpha" in str(exc.value) and "phase1_lang" in str(exc.value)
    with pytest.raises(XbenchError, match="shared by all target languages"):
        meta_method(toy_root).build_encoder("de")
