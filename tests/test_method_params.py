"""Typed method parameters (docs/methods/README.md, "Parameters").

The resolved default parameters are hashed into every encoder's cache key, so the pins below are
written out by hand: a change of a name, a value, a type or the order would silently rebuild (or
mis-key) every cached encoder, and must show up here first.
"""
from __future__ import annotations

from typing import Any

import pytest

from xbench.atomic import hash_json
from xbench.errors import ConfigError
from xbench.methods.base import Method, Param, RunContext
from xbench.profiles import load_profile
from xbench.registry import METHODS, load_object

CLP = {"steps": 300, "budget_tokens": 0, "lr": 0.0005, "warmup_steps": 20, "weight_decay": 0.01, "batch_size": 16,
       "seq_len": 64, "eval_steps": "0,25,50,100,200,300", "heldout_share": 0.05, "helper_layers": 1, "helper_dim": 32,
       "helper_heads": 2, "helper_vocab": 2000, "helper_steps": 300, "helper_lr": 0.0, "helper_limit_alphabet": 1000,
       "init_output": "clp", "on_small_denominator": "warn", "control_init": "model_init", "pretrain_seed": 0}
META = {"total_steps": 600, "phase1_share": 0.5, "phase1_lang": "en", "alpha": 0.5, "vocab_size": 4000,
        "limit_alphabet": 1000, "layers": 2, "hidden": 64, "heads": 2, "ffn": 128, "max_positions": 512, "lr": 0.0005,
        "warmup_steps": 30, "weight_decay": 0.01, "batch_size": 16, "seq_len": 64, "pretrain_seed": 0}
TRELM = {"vocab_size": 4000, "limit_alphabet": 300, "limit_alphabet_zh": 3000, "static_epochs": 3, "map_dis_hidden": 256, "map_epochs": 3,
         "map_epoch_size": 20000, "map_refinements": 1, "map_max_rank": 2000, "aligner": "eflomal", "e_steps": 150,
         "f_steps": 150, "h_steps": 300, "stage_e_en_share": 0.5, "stage_f_reduction": "reference", "lr": 0.0003,
         "warmup_steps": 15, "weight_decay": 0.01, "adam_eps": 1e-06, "max_grad_norm": 5.0, "batch_size": 16,
         "seq_len": 64, "grad_accum": 1, "reference_quirks": False, "pretrain_seed": 0}
EXPECTED: dict[str, dict[str, Any]] = {
    "clp": CLP, "scratch-clp": CLP, "meta": META, "meta-single": META, "trelm": TRELM, "scratch-trelm": TRELM,
    "scratch": {"budget_tokens": 0, "pretrain_seed": 0, "matches": ""}, "source": {},
}
# hash_json of the resolved defaults (the encoders' cache keys hold them); clp's changed when helper_lr came in,
# trelm's when limit_alphabet split by target (zh) and grad_accum came in.
HASHES = {"clp": "0cde53ebdca02fd3", "scratch-clp": "0cde53ebdca02fd3", "meta": "5417bbe49d42a3c8",
          "meta-single": "5417bbe49d42a3c8", "scratch": "da32e0e86346cde1", "source": "44136fa355b3678a",
          "trelm": "6e43a93e9ca3071b", "scratch-trelm": "6e43a93e9ca3071b"}


def _ctx(**params: Any) -> RunContext:
    return RunContext(profile=load_profile("smoke"), model="xbench/tiny-en-bert", data_dir=None, params=params,
                      langs=["de"])


def _method(name: str, **params: Any) -> Method:
    return load_object(METHODS[name].target)(_ctx(**params))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_default_parameters_are_pinned(name: str) -> None:
    got = _method(name).params
    want = EXPECTED[name]
    assert list(got.items()) == list(want.items())  # names, values and order
    assert [type(v) for v in got.values()] == [type(v) for v in want.values()]  # 0.0005 is a float, 0 an int
    assert hash_json(got)[:16] == HASHES[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_parameter_is_declared_typed(name: str) -> None:
    cls = load_object(METHODS[name].target)
    assert list(cls.parameters) == list(EXPECTED[name])
    assert all(isinstance(p, Param) for p in cls.parameters.values())


def test_values_are_parsed_by_the_declared_type() -> None:
    p = _method("clp", lr="1e-3", steps="1e3", heldout_share="0.1", init_output="copy_input").params
    assert p["lr"] == 0.001 and type(p["lr"]) is float
    assert p["steps"] == 1000 and type(p["steps"]) is int
    assert p["init_output"] == "copy_input"
    flag = Param(True)
    assert flag.parse("false") is False and flag.parse("On") is True
    maybe = Param(None, type=int, optional=True, low=0)
    assert maybe.parse("none") is None and maybe.parse("7") == 7 and maybe.problem("k", None) is None
    with pytest.raises(ValueError, match="expected an integer"):
        maybe.parse("seven")
    assert Param(1.0, type=float).parse("2") == 2.0 and type(Param(1.0).parse("2")) is float


def test_every_problem_is_reported_together() -> None:
    with pytest.raises(ConfigError) as exc:
        _method("clp", steps="0", lr="0", heldout_share="1", init_output="nope", seq_len="x", helper_dim="33",
                nosuch="1")
    problems = exc.value.problems
    assert "steps must be at least 1, got 0" in problems
    assert "lr must be greater than 0, got 0.0" in problems
    assert "heldout_share must lie strictly between 0 and 1, got 1.0" in problems
    assert "init_output must be one of clp, copy_input, got 'nope'" in problems
    assert any(p.startswith("--param seq_len=x: expected an integer") for p in problems)
    assert "helper_dim (33) must be a multiple of helper_heads (2)" in problems  # check() still ran
    assert any("no parameter 'nosuch'" in p for p in problems)
    assert len(problems) == 7
    with pytest.raises(ConfigError) as exc:
        _method("meta", phase1_share="1", alpha="-0.5")
    assert exc.value.problems == ["phase1_share must lie in [0, 1) (phase 2 needs steps), got 1.0",
                                  "alpha must be at least 0, got -0.5"]
    with pytest.raises(ConfigError, match=r"budget_tokens must be at least 0 \(0 = the profile's pretraining budget\), got -1"):
        _method("scratch", budget_tokens="-1")


def test_a_method_with_only_defaults_still_parses_by_the_default_type() -> None:
    class Legacy(Method):
        name = "legacy"
        defaults = {"flag": True, "n": 3, "anything": None}

    m = Legacy(_ctx(flag="false", n="4", anything="x"))
    assert m.params == {"flag": False, "n": 4, "anything": "x"}


def test_a_default_out_of_its_own_range_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match="out of its own range"):
        class Bad(Method):  # noqa: F841
            name = "bad"
            parameters = {"steps": Param(0, low=1)}
    with pytest.raises(TypeError, match="bool, int, float or str"):
        class Worse(Method):  # noqa: F841
            name = "worse"
            parameters = {"steps": Param([1])}


def test_a_profile_sets_method_parameters_under_param(tmp_path) -> None:
    from xbench.run.request import RunRequest, resolve

    cpu = load_profile("cpu")["method_params"]
    rr = resolve(RunRequest(method="clp", task="xnli", langs=["de"], profile="cpu", params={"steps": "7"},
                            output_dir=str(tmp_path)))
    assert rr.params == {**cpu["clp"], "steps": "7"}  # --param wins over the profile
    assert rr.config["method"]["params"] == dict(sorted(rr.params.items()))  # what ran is what is recorded
    assert _method_with(rr).params["helper_lr"] == cpu["clp"]["helper_lr"] and _method_with(rr).params["steps"] == 7
    smoke = resolve(RunRequest(method="clp", task="xnli", langs=["de"], output_dir=str(tmp_path)))
    assert smoke.params == {} and smoke.config["method"]["params"] == {}  # no method_params: config as before


def test_the_paper_profile_gives_trelm_and_its_baseline_the_paper_column(tmp_path) -> None:
    from xbench.run.request import RunRequest, resolve

    for name in ("trelm", "scratch-trelm"):
        rr = resolve(RunRequest(method=name, task="xnli", langs=["zh"], profile="paper", output_dir=str(tmp_path)))
        method = _method_with(rr)
        assert method.params["e_steps"] == 20000 and method.params["h_steps"] == 80000
        assert method.params["batch_size"] * method.params["grad_accum"] == 128  # the reference's batch
        assert method.limit_alphabet("zh") == 30000 and method.limit_alphabet("de") == 1000
        args = method.stage_args(10)
        assert (args.grad_accum, args.seq_len, args.lr) == (4, 512, 3e-5)


def _method_with(rr: Any) -> Method:
    ctx = RunContext(profile=rr.profile, model=rr.model, data_dir=None, params=rr.params, langs=["de"])
    return load_object(METHODS[rr.request.method].target)(ctx)


def test_a_profiles_method_parameters_are_checked_by_name_type_and_range() -> None:
    from xbench.run.request import method_params_problems

    profile = {"name": "p", "methods": ["clp", "meta"],
               "method_params": {"clp": {"steps": "many", "lr": 0, "nosuch": 1}, "nomethod": {}, "meta": [1],
                                 "source": {}}}
    problems = method_params_problems(profile)
    assert "profile p: method_params.clp.steps: expected an integer, got 'many'" in problems
    assert "profile p: method_params.clp.lr must be greater than 0, got 0.0" in problems
    assert any(p.startswith("profile p: method_params.clp.nosuch: method 'clp' has no such parameter") for p in problems)
    assert any(p.startswith("profile p: method_params.nomethod: unknown method") for p in problems)
    assert any(p.startswith("profile p: method_params.meta: expected a mapping") for p in problems)
    assert any("method_params.source: the profile's `methods` does not list 'source'" in p for p in problems)
    assert len(problems) == 6
    for name in ("smoke", "cpu", "paper"):
        assert method_params_problems(load_profile(name)) == []
