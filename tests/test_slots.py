"""Data slots (docs/protocols.md, "Data slots"): the paper profiles of `clp` and `meta` read their text from
user files through `--slot` / `--slots`, record each slot's provenance and hash, stop in the pre-flight
when a slot is missing, and use the shared-data fallback only with `--allow-fallback`.

The runs use a toy data root, a tiny local BERT and budgets of a few steps, so that each finishes in
seconds on a CPU. XNLI zero-shot under the paper profile fine-tunes on MultiNLI: here the `mnli_train` slot,
a small TSV; the in-language protocol reads only the data root (its dev-train part).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.test_clp_method import _de, _sentence, make_source, make_toy_root
from xbench.atomic import sha256_file
from xbench.cli import app
from xbench.data.slots import SlotSpec, parse_slots, read_mono, read_parallel, spec_problems
from xbench.errors import ConfigError, DataFormatError

REPO = Path(__file__).resolve().parents[1]
LABELS = ("entailment", "neutral", "contradiction")
FAST_CLP = ["--param", "steps=3", "--param", "helper_steps=2", "--param", "batch_size=4", "--param", "seq_len=16",
            "--param", "helper_vocab=300", "--param", "helper_dim=8", "--param", "warmup_steps=1",
            "--param", "eval_steps=0,3"]
FAST_META = ["--param", "total_steps=4", "--param", "vocab_size=300", "--param", "layers=1", "--param", "hidden=16",
             "--param", "heads=2", "--param", "ffn=32", "--param", "batch_size=4", "--param", "seq_len=16",
             "--param", "warmup_steps=1"]


@pytest.fixture(autouse=True)
def _offline_toy_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XBENCH_DATA", raising=False)  # the toy root alone
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A toy data root with three labels (its dev has a dev-heldout part), a tiny BERT, mono_de / mono_en files."""
    base = tmp_path_factory.mktemp("slots-world")
    root = make_toy_root(base / "data", n=2600)
    for path in (root / "xnli").rglob("*.tsv"):  # the toy labels are all 'neutral'; the pre-flight wants classes
        rows = path.read_text(encoding="utf-8").splitlines()
        path.write_text("".join(f"{r.rsplit(chr(9), 1)[0]}\t{LABELS[i % 3]}\n" for i, r in enumerate(rows)),
                        encoding="utf-8")
    rng = random.Random(7)
    (base / "de.txt").write_text("".join(_de(_sentence(rng)) + "\n" for _ in range(300)), encoding="utf-8")
    (base / "en.txt").write_text("".join(" ".join(_sentence(rng)) + ".\n" for _ in range(300)), encoding="utf-8")
    (base / "mnli.tsv").write_text("".join(f"{' '.join(_sentence(rng))}.\t{' '.join(_sentence(rng))}.\t{LABELS[i % 3]}\n"
                                           for i in range(200)), encoding="utf-8")
    return {"data": root, "bert": make_source(base / "bert", "bert"), "de": base / "de.txt", "en": base / "en.txt",
            "mnli": base / "mnli.tsv"}


def _run(world: dict[str, Path], out: Path, method: str, *extra: str, protocol: str = "in-language") -> dict:
    fast = FAST_CLP if method == "clp" else FAST_META
    res = CliRunner().invoke(app, ["run", "--method", method, "--task", "xnli", "--langs", "de", "--protocol",
                                   protocol, "--profile", "paper", "--model", str(world["bert"]),
                                   "--data-dir", str(world["data"]), "--seeds", "1", "--output-dir", str(out),
                                   "--set", "finetune.max_steps=2", *fast, *extra])
    assert res.exit_code == 0, (res.output, res.exception)
    (path,) = out.rglob("seed-1.json")
    return json.loads(path.read_text(encoding="utf-8"))


def test_clp_paper_profile_runs_through_the_mono_slot(world: dict[str, Path], tmp_path: Path) -> None:
    result = _run(world, tmp_path / "out", "clp", "--slot", f"mono_de={world['de']}", "--slot",
                  f"mnli_train={world['mnli']}", protocol="zero-shot")
    assert result["run"]["profile"] == "paper" and result["method"]["name"] == "clp"
    assert result["run"]["train_split"] == "train"  # the standard protocol: MultiNLI, here through its slot
    mnli = {"path": str(world["mnli"].resolve()), "sha256": sha256_file(world["mnli"])}
    assert result["task"]["slots"]["mnli_train"]["files"] == [mnli]
    assert result["task"]["data"]["en/train"] == {"source": "local", "files": [mnli], "selection": {"slot": "mnli_train"}}
    record = result["task"]["slots"]["mono_de"]
    assert record["source"] == "local" and record["files"] == [{"path": str(world["de"].resolve()),
                                                                 "sha256": sha256_file(world["de"])}]
    assert result["task"]["data"]["slot/mono_de"]["files"] == record["files"]  # in the data hash
    (enc,) = result["model"]["encoders"]
    assert set(enc["provenance"]["pool"]["sources"]) == {"slot:mono_de"}  # the pool is the slot's text alone
    assert enc["provenance"]["pool"]["files"] == record["files"]
    assert "fallback" not in result["flags"]
    assert result["config"]["slots"] == {"mono_de": {"path": str(world["de"].resolve())},
                                         "mnli_train": {"path": mnli["path"]}}

    # Another text in the slot file is other data: another data hash.
    other = tmp_path / "de2.txt"
    other.write_text(world["de"].read_text(encoding="utf-8") + "ein neuer satz mit katze.\n", encoding="utf-8")
    again = _run(world, tmp_path / "out2", "clp", "--slot", f"mono_de={other}", "--slot",
                 f"mnli_train={world['mnli']}", protocol="zero-shot")
    assert again["task"]["data_hash"] != result["task"]["data_hash"]
    assert again["task"]["slots"]["mono_de"]["files"][0]["sha256"] == sha256_file(other)


def test_meta_paper_profile_reads_mono_en_and_mono_de_from_a_slots_file(world: dict[str, Path], tmp_path: Path) -> None:
    slots = tmp_path / "slots.yaml"
    slots.write_text(f"mono_en: {world['en']}\nmono_de:\n  path: {world['de']}\nmnli_train: {world['mnli']}\n",
                     encoding="utf-8")
    result = _run(world, tmp_path / "out", "meta", "--slots", str(slots), protocol="zero-shot")
    assert set(result["task"]["slots"]) == {"mono_en", "mono_de", "mnli_train"}
    assert result["task"]["slots"]["mono_en"]["files"][0]["sha256"] == sha256_file(world["en"])
    assert result["task"]["slots"]["mono_en"]["origin"] == f"--slots {slots}"
    (enc,) = result["model"]["encoders"]
    assert {lang: set(p["sources"]) for lang, p in enc["provenance"]["pools"].items()} == \
        {"en": {"slot:mono_en"}, "de": {"slot:mono_de"}}


def test_allow_fallback_uses_the_shared_pool_and_flags_the_rows(world: dict[str, Path], tmp_path: Path) -> None:
    result = _run(world, tmp_path / "out", "clp", "--allow-fallback")
    assert result["flags"]["fallback"] == ["mono_de"]
    assert "de-mono" in result["task"]["slots"]["mono_de"]["fallback"]
    (enc,) = result["model"]["encoders"]
    assert "xnli-dev-train" in enc["provenance"]["pool"]["sources"]  # the shared-data pool
    from xbench.results.aggregate import aggregate

    (row,) = aggregate([result]).values()
    assert "fallback: mono_de" in row.all_flags()


def _xbench_run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XBENCH_DATA"}
    env.update({"PYTHONPATH": str(REPO), "COLUMNS": "2000"})
    return subprocess.run([sys.executable, "-m", "xbench", "run", "--task", "xnli", "--langs", "de", "--seeds", "1",
                           "--output-dir", str(tmp / "out"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=env)


def test_a_missing_slot_stops_the_run_naming_it_and_the_fallback(world: dict[str, Path], tmp_path: Path) -> None:
    proc = _xbench_run(tmp_path, "--method", "meta", "--protocol", "in-language", "--profile", "paper",
                       "--data-dir", str(world["data"]), "--slot", f"mono_de={world['de']}")
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert err.startswith("error: xbench run (checked before any work)")
    assert "data slot 'mono_en' is needed by method 'meta' under profile 'paper'" in err
    assert "the shared-data fallback would be the shared-data 'en-mono' pool" in err and "--allow-fallback" in err
    assert "mono_de" not in err.split("data slot 'mono_en'")[0]  # the filled slot is not reported
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()  # nothing written or built


def test_the_zero_shot_training_split_names_its_slot_when_missing(world: dict[str, Path], tmp_path: Path) -> None:
    proc = _xbench_run(tmp_path, "--method", "clp", "--profile", "paper", "--data-dir", str(world["data"]),
                       "--model", str(world["bert"]), "--slot", f"mono_de={world['de']}", "--slot", "squad_train=s.json")
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "no data for en/train" in err and "or fill the data slot: --slot mnli_train=FILE" in err
    assert "slot(s) squad_train: xbench does not read these task-data slots yet" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_bad_slots_are_reported_before_any_work(world: dict[str, Path], tmp_path: Path) -> None:
    bad_yaml = tmp_path / "slots.yaml"
    bad_yaml.write_text("mono_de: [unclosed\n", encoding="utf-8")
    proc = _xbench_run(tmp_path, "--method", "clp", "--protocol", "in-language", "--profile", "paper",
                       "--data-dir", str(world["data"]), "--model", str(world["bert"]), "--slots", str(bad_yaml),
                       "--slot", "mono_xx_yy=a.txt", "--slot", "mono_de=wikimedia/wikipedia")
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"--slots {bad_yaml}, line 2: not valid YAML" in err
    assert "slot 'mono_xx_yy': unknown slot name" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    # A hub dataset offline is a pre-flight problem too.
    proc = _xbench_run(tmp_path, "--method", "clp", "--protocol", "in-language", "--profile", "paper",
                       "--data-dir", str(world["data"]), "--model", str(world["bert"]),
                       "--slot", "mono_de=wikimedia/wikipedia")
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2, proc.stderr
    assert "slot 'mono_de' (--slot) names the hub dataset 'wikimedia/wikipedia', but offline mode is on" in err
    assert not (tmp_path / "cache").exists()


def test_the_smoke_profile_needs_no_slots_and_refuses_given_ones(world: dict[str, Path], tmp_path: Path) -> None:
    from xbench.run.request import RunRequest, resolve
    from xbench.run.preflight import run_problems

    req = RunRequest(method="clp", task="xnli", langs=["de"], protocol="in-language", model=str(world["bert"]),
                     data_dir=str(world["data"]), output_dir=str(tmp_path / "out"), params={"steps": "3"})
    rr = resolve(req)
    assert "slots" not in rr.config and "allow_fallback" not in rr.config  # the smoke identity is unchanged
    assert run_problems(rr) == []
    req.slots = {"mono_de": str(world["de"])}
    problems = run_problems(resolve(req))
    assert problems == ["slot(s) mono_de given, but profile 'smoke' reads no data slots (its data_setting is "
                        "'shared'; slots are read under 'standard', e.g. --profile paper)"]


# ----------------------------------------------------------------------------- readers


def test_slot_values_parse_as_paths_or_hub_datasets(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("mono_de: {hub: wikimedia/wikipedia, config: 20231101.de, split: train, revision: abc}\n"
                 "mono_en: ./en.txt\nmono_fr: {hub: x, colour: red}\n", encoding="utf-8")
    specs, problems = parse_slots({"mono_en": "other/en.txt.gz", "parallel_en_de": "hub:opus"}, str(f))
    assert specs["mono_de"] == SlotSpec("mono_de", f"--slots {f}", hub="wikimedia/wikipedia", config="20231101.de",
                                        split="train", revision="abc")
    assert specs["mono_en"].path == "other/en.txt.gz" and specs["mono_en"].origin == "--slot"  # --slot wins
    assert specs["parallel_en_de"].hub == "opus"
    assert problems == [f"--slots {f}: slot 'mono_fr': unknown key(s) colour; valid: path, or hub, config, split, revision"]


def test_mono_and_parallel_files_are_read_with_their_hash(tmp_path: Path) -> None:
    import gzip

    mono = tmp_path / "de.txt.gz"
    with gzip.open(mono, "wt", encoding="utf-8") as f:
        f.write("eins zwei\n\ndrei\n")
    lines, record = read_mono(SlotSpec("mono_de", "--slot", path=str(mono)))
    assert lines == ["eins zwei", "", "drei"] and record["files"][0]["sha256"] == sha256_file(mono)
    tsv = tmp_path / "p.tsv"
    tsv.write_text("a cat\teine katze\nthe dog\tder hund\n", encoding="utf-8")
    assert read_parallel(SlotSpec("parallel_en_de", "--slot", path=str(tsv)), "en", "de")[0] == \
        [("a cat", "eine katze"), ("the dog", "der hund")]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"src": "a cat", "tgt": "eine katze", "src_lang": "en", "tgt_lang": "de"}\n'
                     '{"src": "x", "tgt": "y", "src_lang": "en", "tgt_lang": "fr"}\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"p.jsonl, line 2: field 'src_lang/tgt_lang'"):
        read_parallel(SlotSpec("parallel_en_de", "--slot", path=str(jsonl)), "en", "de")
    tsv.write_text("a cat\teine katze\nonly one column\n", encoding="utf-8")
    assert spec_problems(SlotSpec("parallel_en_de", "--slot", path=str(tsv))) == [
        f"slot 'parallel_en_de' (--slot): {tsv}, line 2: found 1 tab-separated columns (expected 2 columns: en text, "
        "de text)"]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\n")
    [problem] = spec_problems(SlotSpec("mono_de", "--slot", path=str(bad)))
    assert problem.startswith(f"slot 'mono_de' (--slot): {bad}, line 2: not UTF-8 text")
    assert "expected a text file" in spec_problems(SlotSpec("mono_de", "--slot", path=str(tsv)))[0]


def test_method_pool_without_a_slot_is_an_error_naming_it(world: dict[str, Path]) -> None:
    from xbench.data.slots import method_pool
    from xbench.data.slots import SlotSet

    slots = SlotSet({}, active=True)
    with pytest.raises(ConfigError, match="data slot 'mono_de' is needed"):
        method_pool("de", str(world["data"]), slots)
    assert method_pool("de", str(world["data"]), SlotSet({}, active=True, allow_fallback=True)).sources


def test_mnli_jsonl_slot_is_read_and_bad_labels_name_the_line(tmp_path: Path) -> None:
    from xbench.data.slots import read_pair_slot

    path = tmp_path / "multinli_1.0_train.jsonl"
    path.write_text('{"sentence1": "A cat.", "sentence2": "An animal.", "gold_label": "entailment"}\n'
                    '{"sentence1": "A dog.", "sentence2": "A cat.", "gold_label": "contradiction"}\n', encoding="utf-8")
    examples, prov = read_pair_slot(SlotSpec("mnli_train", "--slot", path=str(path)), list(LABELS), {"-"})
    assert [(e.premise, e.label) for e in examples] == [("A cat.", 0), ("A dog.", 2)]
    assert prov.files == [{"path": str(path.resolve()), "sha256": sha256_file(path)}]
    path.write_text('{"sentence1": "A cat.", "sentence2": "An animal.", "gold_label": "-"}\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"multinli_1.0_train.jsonl, line 1: field 'label'"):
        read_pair_slot(SlotSpec("mnli_train", "--slot", path=str(path)), list(LABELS), {"-"})


def test_a_slot_file_is_parsed_once_for_the_preflight_and_the_run(tmp_path: Path, monkeypatch) -> None:
    # A mono slot may be a large corpus: the pre-flight's read and the run's read share one parse,
    # and an edited file is read again.
    from xbench.data import slots as slots_mod
    from xbench.data.textfiles import clear_memo

    clear_memo()
    calls = []
    real = slots_mod._read_lines
    monkeypatch.setattr(slots_mod, "_read_lines", lambda path: calls.append(path) or real(path))
    text = tmp_path / "de.txt"
    text.write_text("Ein Satz.\nNoch ein Satz.\n", encoding="utf-8")
    spec, problems = slots_mod.parse_spec("mono_de", str(text), "--slot")
    assert not problems and slots_mod.spec_problems(spec) == []
    lines, _ = slots_mod.read_mono(spec)
    assert lines == ["Ein Satz.", "Noch ein Satz."] and len(calls) == 1
    text.write_text("Ein anderer Satz, länger als der erste.\n", encoding="utf-8")
    assert slots_mod.read_mono(spec)[0] == ["Ein anderer Satz, länger als der erste."] and len(calls) == 2
