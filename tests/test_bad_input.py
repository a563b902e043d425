"""Bad input to `xbench run`, table-driven: exit 2, one message naming the field/file and what was
expected, no traceback, nothing written to --output-dir or the cache, and all of it before any work.

Cases of the run's names, seeds, --set, --profile, --output-dir, result paths and --resume
identity. Data-file cases are in test_preflight.py, leaderboard/check cases in test_results_input.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from xbench.errors import ConfigError, XbenchError
from xbench.run.request import RunRequest, apply_overrides, output_dir_problem, resolve
from xbench.results.schema import path_component_problem, result_path

REPO = Path(__file__).resolve().parent.parent
RUN = ["run", "--method", "source", "--task", "xnli", "--langs", "de", "--seeds", "1"]


@dataclass
class Case:
    id: str
    args: list[str]  # after `xbench`; {tmp} is the case's folder, {out} its --output-dir
    expect: list[str]  # fragments of the error message
    setup: Callable[[Path], Any] | None = None  # may return a callable that undoes it
    needs_data: bool = False  # the run gets past resolve() into the data pre-flight
    out: str = "{tmp}/out"
    extra: dict[str, Any] = field(default_factory=dict)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _resume_request(tmp: Path, **kw: Any) -> RunRequest:
    return RunRequest(method="source", task="xnli", langs=["de"], seeds=[1], output_dir=str(tmp / "out"),
                      resume=True, **kw)


def _existing_result(tmp: Path, *, overrides: dict[str, str] | None = None, edit: Callable[[dict], None] | None = None,
                     data_sha: str | None = None) -> None:
    """A finished seed-1 result, as `xbench run` writes it for `--langs de` (plus `overrides`)."""
    rr = resolve(_resume_request(tmp, overrides=overrides or {}))
    data_file = tmp / "data" / "xnli-extra" / "train.tsv"
    _write(data_file, "premise\thypothesis\tlabel\n")
    from xbench.atomic import sha256_file

    result = {
        "schema_version": 2, "xbench_version": rr.config["xbench_version"], "run_id": "r",
        "task": {"name": "xnli", "version": rr.card.version, "type": rr.card.task_type, "metric": "accuracy",
                 "data": {"en/dev-train": {"source": "local", "files": [
                     {"path": "xnli-extra/train.tsv", "sha256": data_sha or sha256_file(data_file)}]}}},
        "method": {"name": "source", "kind": "baseline", "params": {}}, "model": {"name": rr.model},
        "run": {"protocol": rr.protocol, "variant": "", "profile": "smoke", "seed": 1, "eval_langs": ["de"]},
        "scores": {"metric": "accuracy", "metrics": ["accuracy"], "languages": ["de"], "average": 0.4,
                   "per_language": {"de": {"accuracy": 0.4, "n": 10}}},
        "compute": {"transfer_total": {"stages": 0, "optimizer_steps": 0, "tokens_seen": 0, "flops_est": 0.0,
                                       "wall_seconds": 0.0}, "wall_seconds_total": 1.0},
        "config": rr.config, "config_hash": rr.config_hash, "environment": {},
    }
    if edit is not None:
        edit(result)
    path = result_path(tmp / "out", "xnli", rr.protocol, "smoke", "source", rr.model, 1)
    _write(path, json.dumps(result))


def _old_code_version(result: dict) -> None:
    result["config"]["xbench_version"] = "0.0.1"


_HOLDER = """
import sys, time
from pathlib import Path
from xbench.run.record import result_lock as _result_lock
with _result_lock(Path(sys.argv[1]), Path(sys.argv[2])):
    print("held", flush=True)
    time.sleep(300)
"""


def _hold_lock(tmp: Path) -> Callable[[], None]:
    """Another process is running seed 1 of the same identity."""
    from xbench.profiles import load_profile

    out = tmp / "out"
    path = result_path(out, "xnli", "zero-shot", "smoke", "source", load_profile("smoke")["model"], 1)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), str(path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout.readline().strip() == "held"

    def release() -> None:
        holder.kill()
        holder.wait(timeout=30)
    return release


CASES = [
    # --seeds
    Case("seeds-empty", [*RUN[:-1], ""], ["--seeds expects comma-separated non-negative integers", "got nothing"]),
    Case("seeds-empty-item", [*RUN[:-1], "1,,2"], ["--seeds expects comma-separated non-negative integers",
                                                    "got '' in '1,,2'"]),
    Case("seeds-negative", [*RUN[:-1], "-1"], ["--seeds: seeds are non-negative integers, got -1"]),
    Case("seeds-word", [*RUN[:-1], "1,two"], ["got 'two' in '1,two'"]),
    Case("seeds-duplicate", [*RUN[:-1], "1,1"], ["--seeds: duplicate seeds in [1, 1]"]),
    # --profile: shipped names only
    Case("profile-path", [*RUN, "--profile", "some/dir/evil"],
         ["unknown profile 'some/dir/evil'; valid profiles: cpu, paper, smoke"]),
    Case("profile-path-to-a-yaml", [*RUN, "--profile", "{tmp}/evil"], ["unknown profile", "valid profiles: cpu, paper, smoke"],
         setup=lambda tmp: _write(tmp / "evil.yaml", (REPO / "xbench/profiles/smoke.yaml").read_text()
                                  .replace("name: smoke", "name: ../../escaped"))),
    # --set: keys, types, ranges, 1e-3 as a number
    Case("set-unknown-key", [*RUN, "--set", "finetune.lrr=5"],
         ["--set finetune.lrr: unknown setting 'lrr' in finetune.sentence-pair-classification",
          "valid keys: lr, batch_size"]),
    Case("set-not-a-number", [*RUN, "--set", "finetune.lr=abc"], ["--set finetune.lr: expected a number, got 'abc'"]),
    Case("set-not-an-integer", [*RUN, "--set", "finetune.max_steps=2.5"],
         ["--set finetune.max_steps: expected an integer, got 2.5"]),
    Case("set-negative-steps", [*RUN, "--set", "finetune.max_steps=-5"], ["--set finetune.max_steps: must be >= 1, got -5"]),
    Case("set-zero-batch", [*RUN, "--set", "finetune.batch_size=0"], ["--set finetune.batch_size: must be >= 1, got 0"]),
    Case("set-warmup-ratio", [*RUN, "--set", "finetune.warmup_ratio=1"], ["--set finetune.warmup_ratio: must be in [0, 1)"]),
    Case("set-exponent-is-a-number", [*RUN, "--set", "pretrain.mlm.lr=-1e-3"],
         ["--set pretrain.mlm.lr: must be > 0, got -0.001"]),
    Case("set-no-block", [*RUN, "--set", "pretrain.nope.lr=1"], ["--set pretrain.nope.lr: profile 'smoke' has no pretrain "
                                                                 "block 'nope'; valid blocks: mlm"]),
    Case("set-profile-name", [*RUN, "--set", "name=../x"], ["--set name: no such profile setting"]),
    Case("set-negative-seed", [*RUN, "--set", "seeds=[-1]"], ["--set seeds: seeds are non-negative integers, got -1"]),
    Case("set-no-value", [*RUN, "--set", "finetune.lr"], ["--set expects key=value, got: finetune.lr"]),
    Case("set-all-at-once", [*RUN, "--set", "finetune.lrr=5", "--set", "finetune.lr=abc", "--set", "finetune.max_steps=0"],
         ["3 problems", "unknown setting 'lrr'", "expected a number, got 'abc'", "must be >= 1, got 0"]),
    Case("syntax-and-settings-at-once", [*RUN[:-1], "-1,x", "--set", "oops", "--set", "finetune.lrr=5", "--param", "=1"],
         ["4 problems", "got 'x' in '-1,x'", "--set expects key=value, got: oops", "--param expects key=value, got: =1",
          "unknown setting 'lrr'"]),
    # --output-dir
    Case("output-dir-is-a-file", RUN, ["--output-dir", "is a file, not a folder"], out="{tmp}/file",
         setup=lambda tmp: _write(tmp / "file", "x")),
    Case("output-dir-under-a-file", RUN, ["is a file, not a folder"], out="{tmp}/file/results",
         setup=lambda tmp: _write(tmp / "file", "x")),
    Case("output-dir-not-writable", RUN, ["--output-dir /proc/xbench-results is not writable"],
         out="/proc/xbench-results"),
    # --resume keeps only a result of the same identity
    Case("resume-other-languages", [*RUN[:6], "zh", "--seeds", "1", "--resume"],
         ["seed-1.json was made for languages de, this run asks zh"], setup=_existing_result, needs_data=True),
    Case("resume-other-settings", [*RUN, "--resume"], ["seed-1.json: config differs", "finetune.max_steps 2 vs 200"],
         setup=lambda tmp: _existing_result(tmp, overrides={"finetune.max_steps": "2"}), needs_data=True),
    Case("resume-other-code-version", [*RUN, "--resume"], ['xbench_version "0.0.1" vs'],
         setup=lambda tmp: _existing_result(tmp, edit=_old_code_version), needs_data=True),
    Case("resume-changed-data", [*RUN, "--resume", "--data-dir", "{tmp}/data"],
         ["data file", "xnli-extra/train.tsv (en/dev-train) changed since the result was made"],
         setup=lambda tmp: _existing_result(tmp, data_sha="0" * 64), needs_data=True),
    # one run per result path
    Case("same-seed-running-elsewhere", RUN, ["seed-1.json is being written by another xbench run (pid"],
         setup=_hold_lock, needs_data=True),
]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    if case.needs_data and not os.environ.get("XBENCH_DATA"):
        pytest.skip("needs XBENCH_DATA (the run gets as far as the data pre-flight)")
    undo = case.setup(tmp_path) if case.setup else None
    out = Path(case.out.format(tmp=tmp_path))
    cache = tmp_path / "cache"
    sub = {"tmp": str(tmp_path), "out": str(out)}
    args = [a.format(**sub) for a in case.args] + ["--output-dir", str(out)]
    before = _snapshot(out), _snapshot(cache)
    try:
        # No COLUMNS: piped, the message must come out whole, not folded at 80 columns.
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        proc = subprocess.run([sys.executable, "-m", "xbench", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=180, env={**env, "PYTHONPATH": str(REPO), "XBENCH_CACHE": str(cache)})
    finally:
        if callable(undo):
            undo()
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "Traceback" not in text
    assert proc.stderr.startswith("error: "), proc.stderr
    for fragment in case.expect:
        assert fragment in proc.stderr, (fragment, proc.stderr)
    assert (_snapshot(out), _snapshot(cache)) == before, "bad input wrote files"


# The same rules, below the CLI.

def test_every_path_component_is_checked_by_one_rule() -> None:
    for bad in ["..", ".", "", "a/b", "a\\b", ".hidden", "-x", "a..b", "x\x00"]:
        assert path_component_problem("task", bad), bad
    for good in ["xnli", "zero-shot+treebank=pud", "xbench--tiny-en-bert", "question_langs=de,en;treebank=pud"]:
        assert path_component_problem("protocol", good) is None, good
    assert path_component_problem("seed", -1) and path_component_problem("seed", True) and not path_component_problem("seed", 0)
    with pytest.raises(XbenchError, match="task '../x' cannot be part of a file path"):
        result_path(Path("r"), "../x", "zero-shot", "smoke", "source", "m", 1)


@pytest.mark.parametrize("model", ["..", "../..", "../outside", "/abs/path/../../x", "~/m", "./m", "..."])
def test_model_slug_never_leaves_the_output_tree(model: str, tmp_path: Path) -> None:
    root = tmp_path / "out"
    path = result_path(root, "xnli", "zero-shot", "smoke", "source", model, 1)
    assert path.resolve().is_relative_to(root.resolve()) and path.parent.parent.name == "source"
    assert ".." not in path.parent.name and not path.parent.name.startswith(".")


def test_profile_name_must_match_its_file_and_exponents_are_numbers(tmp_path: Path, monkeypatch) -> None:
    import xbench.profiles as profiles

    text = (REPO / "xbench/profiles/smoke.yaml").read_text()
    _write(tmp_path / "renamed.yaml", text)
    _write(tmp_path / "expo.yaml", text.replace("name: smoke", "name: expo").replace("lr: 5.0e-4", "lr: 5e-4"))
    monkeypatch.setattr(profiles, "PROFILE_DIR", tmp_path)
    with pytest.raises(ConfigError, match="'name' is 'smoke', it must equal the file name 'renamed'"):
        profiles.load_profile("renamed")
    assert profiles.load_profile("expo")["pretrain"]["mlm"]["lr"] == 5e-4
    assert profiles.load_yaml("1e-3") == 0.001 and profiles.load_yaml("2E+5") == 2e5 and profiles.load_yaml("7") == 7


def test_shipped_profiles_validate_with_ranges() -> None:
    from xbench.profiles import available, profile_problems

    assert available() == ["cpu", "paper", "smoke"]
    assert [p for name in available() for p in profile_problems(name)] == []


def test_profile_settings_out_of_range_are_found(tmp_path: Path, monkeypatch) -> None:
    import xbench.profiles as profiles

    text = (REPO / "xbench/profiles/smoke.yaml").read_text().replace("name: smoke", "name: bad")
    _write(tmp_path / "bad.yaml", text.replace("max_steps: 600", "max_steps: -1").replace("seeds: [1]", "seeds: [1, -2]")
           .replace("lr: 5.0e-4", "lrr: 5.0e-4, lr: 1"))
    monkeypatch.setattr(profiles, "PROFILE_DIR", tmp_path)
    problems = profiles.profile_problems("bad")
    assert "profile bad: pretrain.mlm.max_steps: must be >= 1, got -1" in problems
    assert "profile bad: seeds: seeds are non-negative integers, got -2" in problems
    assert any(p.startswith("profile bad: pretrain.mlm.lrr: unknown setting") for p in problems)


def test_overrides_convert_and_keep_the_profile_untouched() -> None:
    from xbench.profiles import load_profile

    profile = load_profile("smoke")
    out, problems = apply_overrides(profile, {"pretrain.mlm.lr": "1e-3", "finetune.lr": "1", "finetune.epochs": "2",
                                              "seeds": "[1, 2]"}, "sentence-pair-classification")
    assert problems == []
    assert out["pretrain"]["mlm"]["lr"] == 0.001 and isinstance(out["finetune"]["sentence-pair-classification"]["lr"], float)
    assert out["finetune"]["sentence-pair-classification"]["epochs"] == 2.0 and out["seeds"] == [1, 2]
    assert profile["pretrain"]["mlm"]["lr"] == 5e-4 and profile["seeds"] == [1]


def test_output_dir_probe_leaves_nothing(tmp_path: Path) -> None:
    assert output_dir_problem(tmp_path / "new" / "deeper") is None
    assert list(tmp_path.iterdir()) == []  # neither the folders nor the probe file


def _profile_with_protocols(tmp_path: Path, monkeypatch, protocols: str) -> None:
    import xbench.profiles as profiles

    text = (REPO / "xbench/profiles/smoke.yaml").read_text().replace("name: smoke", "name: proto")
    block = "  sentence-pair-classification: {"
    assert block in text
    _write(tmp_path / "proto.yaml", text.replace(block, block + f"protocols: {protocols}, ", 1))
    monkeypatch.setattr(profiles, "PROFILE_DIR", tmp_path)


def test_a_protocol_entry_changes_its_protocol_only_and_set_still_wins(tmp_path: Path, monkeypatch) -> None:
    base = resolve(RunRequest(method="source", task="xnli", langs=["de"], profile="smoke",
                              output_dir=str(tmp_path / "out"))).finetune
    _profile_with_protocols(tmp_path, monkeypatch, "{in-language: {max_steps: 77, lr: 3.0e-4}}")

    def run(protocol: str, **overrides: str):
        return resolve(RunRequest(method="source", task="xnli", langs=["de"], protocol=protocol, profile="proto",
                                  output_dir=str(tmp_path / "out"), overrides=overrides))

    in_language, zero_shot = run("in-language"), run("zero-shot")
    assert in_language.finetune == {**base, "max_steps": 77, "lr": 3e-4}
    assert zero_shot.finetune == base
    # what the config records is the resolved block: no table, so other protocols' identities are as before
    assert "protocols" not in str(zero_shot.config) and "protocols" not in str(in_language.config)
    assert run("in-language", **{"finetune.max_steps": "5"}).finetune["max_steps"] == 5


def test_bad_protocol_entries_are_reported(tmp_path: Path, monkeypatch) -> None:
    import xbench.profiles as profiles
    from xbench.cards import validate_all_cards
    from xbench.run.request import protocol_override_problems

    _profile_with_protocols(tmp_path, monkeypatch, "{in-langauge: {max_step: 5, lr: fast}, zero-shot: 3}")
    problems = profiles.profile_problems("proto")
    where = "profile proto: finetune.sentence-pair-classification.protocols"
    assert any(p.startswith(f"{where}.in-langauge.max_step: unknown setting") for p in problems), problems
    assert f"{where}.in-langauge.lr: expected a number, got 'fast'" in problems
    assert f"{where}.zero-shot: expected a mapping of settings, got 3" in problems

    _profile_with_protocols(tmp_path, monkeypatch, "{in-langauge: {max_steps: 5}}")
    assert profiles.profile_problems("proto") == []
    typo = protocol_override_problems(profiles.load_profile("proto"), validate_all_cards()[0])
    assert len(typo) == 1 and "in-langauge: no card of task type 'sentence-pair-classification'" in typo[0]
