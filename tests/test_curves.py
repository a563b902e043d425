"""`xbench curves`: steps-saved arithmetic (docs/protocols.md) on hand-made curves, and the command on a
toy data root with a tiny GPT-2 source (the causal-LM path of docs/methods/clp.md)."""
from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from tests.test_clp_method import FAST_CLP, gpt2_source, toy_root  # noqa: F401  (session fixtures)
from xbench.cli import app
from xbench.errors import XbenchError
from xbench.methods.clp.curves import build_curves
from xbench.results.curves import describe_saved, steps_saved


@pytest.fixture(scope="module", autouse=True)
def _toy_root_only():
    # A data_dir adds to XBENCH_DATA; these tests read their toy root alone.
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("XBENCH_DATA", raising=False)
        yield


def curve(*points: tuple[int, float | None], per_step: int = 1024) -> list[dict]:
    return [{"step": s, "tokens": s * per_step, "perplexity": v} for s, v in points]


SCRATCH = curve((0, 900.0), (25, 300.0), (50, 120.0), (100, 60.0), (200, 40.0), (300, 30.0))


def test_reached_between_two_evaluations_is_interpolated():
    method = curve((0, 200.0), (25, 80.0), (50, 50.0), (100, 35.0), (200, 25.0), (300, 20.0))
    s = steps_saved(method, SCRATCH)
    # v* = 30 lies between 35 at step 100 and 25 at step 200: 100 + (35 - 30) / (35 - 25) * 100 = 150.
    assert s["target"] == 30.0 and s["scratch_total"] == 300 and s["reached"]
    assert s["at"] == pytest.approx(150.0) and s["fraction_of_scratch"] == pytest.approx(0.5)
    assert s["saved"] == pytest.approx(0.5) and describe_saved(s) == "50% saved (150 of 300 steps)"


def test_reached_at_an_evaluation_point_and_at_the_start():
    assert steps_saved(curve((0, 100.0), (50, 30.0), (300, 10.0)), SCRATCH)["at"] == 50
    start = steps_saved(curve((0, 29.0), (300, 10.0)), SCRATCH)
    assert start["at"] == 0 and start["saved"] == 1.0


def test_never_reached():
    s = steps_saved(curve((0, 900.0), (300, 31.0)), SCRATCH)
    assert not s["reached"] and s["at"] is None and "saved" not in s and describe_saved(s) == "not reached"


def test_the_scratch_run_against_itself_saves_nothing():
    assert steps_saved(SCRATCH, SCRATCH)["saved"] == pytest.approx(0.0)


def test_overflowed_points_and_token_units():
    # An overflowed perplexity (None) is worse than any value; from it the curve is reached at the next point.
    s = steps_saved(curve((0, None), (25, 20.0), (300, 5.0)), SCRATCH)
    assert s["at"] == 25
    half = steps_saved(curve((0, 60.0), (100, 20.0), per_step=512), SCRATCH, unit="tokens",
                       scratch_total=300 * 1024)
    # Tokens: v* = 30 reached at 75 steps x 512 tokens = 38,400 of 307,200 scratch tokens.
    assert half["unit"] == "tokens" and half["at"] == pytest.approx(38400) and half["saved"] == pytest.approx(0.875)


def test_bad_curves_are_clear_errors():
    with pytest.raises(XbenchError, match="at least one point"):
        steps_saved([], SCRATCH)
    with pytest.raises(XbenchError, match="finite final value"):
        steps_saved(SCRATCH, curve((0, 50.0), (10, None)))


def test_curves_command_writes_png_and_json(toy_root, gpt2_source, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    params = [x for k, v in FAST_CLP.items() for x in ("--param", f"{k}={v}")]
    out = tmp_path / "lb"
    res = CliRunner().invoke(app, ["curves", "--method", "clp", "--lang", "de", "--model", str(gpt2_source),
                                   "--data-dir", str(toy_root), "--output-dir", str(out), *params])
    assert res.exit_code == 0, res.output
    png = (out / "curves-clp-de.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    data = json.loads((out / "curves-clp-de.json").read_text())
    assert data["objective"] == "clm" and set(data["runs"]) == {"clp", "scratch", "source+random-emb"}
    steps = {tuple(p["step"] for p in r["curve"]) for r in data["runs"].values()}
    assert steps == {(0, 3, 6)}
    assert len({r["tokens_seen"] for r in data["runs"].values()}) == 1  # the same token budget
    assert all(math.isfinite(p["loss"]) for r in data["runs"].values() for p in r["curve"])
    assert set(data["steps_saved"]) == {"clp", "source+random-emb"}
    assert data["steps_saved"]["clp"]["scratch_total"] == 6
    printed = res.output.replace("\n", "")  # rich wraps long lines at the test terminal's width
    assert "lowest perplexity at step 0" in printed and "curves-clp-de.png" in printed

    # Everything is cached: a second call builds nothing and draws the same curves.
    again = build_curves("clp", "de", model=str(gpt2_source), data_dir=str(toy_root), output_dir=out,
                         params={**FAST_CLP})
    assert again.data["runs"] == data["runs"]


def test_curves_for_an_unsupported_method():
    with pytest.raises(XbenchError, match="learning curves for: clp"):
        build_curves("meta", "de")


def test_curves_over_several_seeds(toy_root, gpt2_source, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "lb"
    many = build_curves("clp", "de", model=str(gpt2_source), data_dir=str(toy_root), output_dir=out,
                        params={**FAST_CLP}, seeds=[0, 1])
    one = {seed: build_curves("clp", "de", model=str(gpt2_source), data_dir=str(toy_root), output_dir=tmp_path / f"s{seed}",
                              params={**FAST_CLP, "pretrain_seed": str(seed)}).data for seed in (0, 1)}
    assert many.data["seeds"] == [0, 1]
    for variant, run in many.data["runs"].items():
        for i, p in enumerate(run["curve"]):
            vals = [one[s]["runs"][variant]["curve"][i]["perplexity"] for s in (0, 1)]
            assert p["perplexity"] == pytest.approx(sum(vals) / 2)
            assert p["perplexity_min"] == min(vals) and p["perplexity_max"] == max(vals)
    s = many.data["steps_saved"]["clp"]
    reached = [one[x]["steps_saved"]["clp"]["saved"] for x in (0, 1) if one[x]["steps_saved"]["clp"]["reached"]]
    assert s["n"] == 2 and s["reached"] == len(reached)
    if reached:
        assert s["saved_mean"] == pytest.approx(sum(reached) / len(reached))
    assert "seeds" in describe_saved(s)
    with pytest.raises(XbenchError, match="not both"):
        build_curves("clp", "de", model=str(gpt2_source), data_dir=str(toy_root), output_dir=out,
                     params={**FAST_CLP, "pretrain_seed": "1"}, seeds=[0, 1])
