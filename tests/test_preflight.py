"""The run's pre-flight (issue 9 C.14, C.17): every data file a run will read is located and parsed,
the task type's checks run, method parameters and a local --model folder are checked, and every
problem is reported at once, before any model is built or trained.

Data roots are built in tmp_path from tiny synthetic files in the official formats; XBENCH_DATA is
unset so that only --data-dir is read.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from xbench.data.textfiles import clear_memo
from xbench.errors import ConfigError, DataFormatError, XbenchError

REPO = Path(__file__).resolve().parent.parent
LABELS = ("entailment", "neutral", "contradiction")


@pytest.fixture(autouse=True)
def _only_given_roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XBENCH_DATA", raising=False)
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    clear_memo()


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- synthetic data roots


def _xnli_lines(n: int, bad_line: int | None = None) -> str:
    return "".join(f"premise {i}\thypothesis {i}\t{'entailmnt' if i + 1 == bad_line else LABELS[i % 3]}\n"
                   for i in range(n))


def xnli_root(root: Path, *, bad_train_line: int | None = None, test_langs: tuple[str, ...] = ("de",)) -> Path:
    # The shared setting trains on en dev rows 0..2240 and selects on rows 2241..2489.
    _write(root / "xnli" / "dev" / "en.tsv", _xnli_lines(2490, bad_train_line))
    for lang in test_langs:
        _write(root / "xnli" / "test" / f"{lang}.tsv", _xnli_lines(30))
    return root


PANX = "John\tB-PER\nlives\tO\nin\tO\nParis\tB-LOC\n\nMary\tB-PER\nleft\tO\n"


def panx_root(root: Path) -> Path:
    _write(root / "panx" / "train-en.tsv", PANX)
    _write(root / "panx" / "dev-en.tsv", PANX)
    _write(root / "panx" / "dev-de.tsv", PANX)
    return root


def _squad(context: str = "Paris is the capital of France.", answer: str = "Paris") -> str:
    doc = {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "What is the capital?", "answers": [{"text": answer, "answer_start": 0}]}]}]}]}
    return json.dumps(doc)


def qa_root(root: Path) -> Path:
    _write(root / "tydiqa_goldp" / "train" / "tydiqa.goldp.en.train.json", _squad())
    _write(root / "xquad" / "xquad.de.json", _squad("Berlin ist die Hauptstadt.", "Berlin"))
    return root


def _conllu(*rows: str) -> str:
    return "\n".join(r.replace(" | ", "\t") for r in rows) + "\n\n"


GOOD_TREE = _conllu("# sent_id = 1", "1 | Dogs | dog | NOUN | _ | _ | 2 | nsubj | _ | _",
                    "2 | bark | bark | VERB | _ | _ | 0 | root | _ | _")


def ud_root(root: Path) -> Path:
    for split in ("train", "dev"):
        _write(root / "ud" / "UD_English-EWT" / f"en_ewt-ud-{split}.conllu", GOOD_TREE)
    _write(root / "ud" / "UD_German-GSD" / "de_gsd-ud-test.conllu", GOOD_TREE)
    return root


# ----------------------------------------------------------------------------- the CLI, table-driven


def _pickle_only_model(folder: Path) -> Path:
    _write(folder / "config.json", json.dumps({"model_type": "bert"}))
    _write(folder / "vocab.txt", "[PAD]\n[UNK]\n")
    _write(folder / "pytorch_model.bin", b"not read")
    return folder


def _no_config_model(folder: Path) -> Path:
    _write(folder / "model.safetensors", b"")
    _write(folder / "tokenizer.json", "{}")
    return folder


@dataclass
class Case:
    id: str
    task: str
    langs: str
    build: Callable[[Path], object]  # writes the data root (and anything else) under the case's folder
    expect: list[str]  # fragments of the message; {data} is the data root
    extra: list[str] = field(default_factory=list)
    method: str = "source"


def _broken(path: str, text: str | bytes, base: Callable[[Path], Path]) -> Callable[[Path], object]:
    return lambda tmp: (base(tmp / "data"), _write(tmp / "data" / path, text))


CASES = [
    Case("xnli-bad-label-in-english-training-file", "xnli", "de",
         lambda tmp: xnli_root(tmp / "data", bad_train_line=5),
         ["{data}/xnli/dev/en.tsv, line 5: field 'label': unknown label 'entailmnt'"]),
    Case("xnli-non-utf8-test-file", "xnli", "de",
         _broken("xnli/test/de.tsv", _xnli_lines(2).encode() + b"caf\xe9\thyp\tneutral\n", xnli_root),
         ["{data}/xnli/test/de.tsv, line 3: not UTF-8 text"]),
    Case("panx-missing-myanmar-dev-file", "panx", "de,my", lambda tmp: panx_root(tmp / "data"),
         ["no data for panx my/dev", "{data}/panx/dev-my.tsv"]),
    Case("xquad-malformed-json", "xquad", "de", _broken("xquad/xquad.de.json", '{"data": [', qa_root),
         ["{data}/xquad/xquad.de.json, line 1: invalid JSON"]),
    Case("ud-broken-conllu", "ud", "de",
         _broken("ud/UD_German-GSD/de_gsd-ud-test.conllu", GOOD_TREE.replace("\t_\t_\n2", "\t_\n2", 1), ud_root),
         ["{data}/ud/UD_German-GSD/de_gsd-ud-test.conllu, line 2: 9 tab-separated columns"]),
    Case("param-budget-tokens-not-a-number", "xnli", "de", lambda tmp: xnli_root(tmp / "data"),
         ["--param budget_tokens=abc: expected an integer"], ["--param", "budget_tokens=abc"], method="scratch"),
    Case("model-folder-with-a-pickle-checkpoint-only", "xnli", "de",
         lambda tmp: (xnli_root(tmp / "data"), _pickle_only_model(tmp / "model")),
         ["holds only pickle checkpoint(s) (pytorch_model.bin)", "only safetensors weights"], ["--model", "{tmp}/model"]),
    Case("model-folder-without-config", "xnli", "de",
         lambda tmp: (xnli_root(tmp / "data"), _no_config_model(tmp / "model")),
         ["{tmp}/model has no config.json"], ["--model", "{tmp}/model"]),
]


def _xbench_run(tmp: Path, method: str, task: str, langs: str, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XBENCH_DATA"}
    # COLUMNS: the message is compared whole, so rich must not wrap the long tmp paths in it.
    env.update({"XBENCH_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "PYTHONPATH": str(REPO), "COLUMNS": "2000"})
    return subprocess.run([sys.executable, "-m", "xbench", "run", "--method", method, "--task", task, "--langs", langs,
                           "--seeds", "1", "--data-dir", str(tmp / "data"), "--output-dir", str(tmp / "out"),
                           *(e.replace("{tmp}", str(tmp)) for e in extra)],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_reported_before_any_work(case: Case, tmp_path: Path) -> None:
    case.build(tmp_path)
    proc = _xbench_run(tmp_path, case.method, case.task, case.langs, *case.extra)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    assert err.startswith("error: xbench run (checked before any work)") and err.count("error:") == 1, err
    for fragment in case.expect:
        assert fragment.format(data=tmp_path / "data", tmp=tmp_path) in err, (fragment, err)
    assert not (tmp_path / "out").exists()  # no result, no work folder, no lock
    assert not (tmp_path / "cache").exists()  # no source model, no features: nothing was built


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    xnli_root(tmp_path / "data", bad_train_line=7, test_langs=("fr",))
    _write(tmp_path / "data" / "xnli" / "test" / "de.tsv", "premise\thypothesis\n")
    proc = _xbench_run(tmp_path, "clp", "xnli", "de,fr,zh", "--param", "steps=abc", "--param", "helper_heads=0")
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    data = tmp_path / "data"
    for fragment in ["5 problems", "--param steps=abc: expected an integer, got 'abc'", "helper_heads must be at least 1",
                     f"{data}/xnli/dev/en.tsv, line 7: field 'label'", f"{data}/xnli/test/de.tsv, line 1: found 2",
                     "no data for zh/test"]:
        assert fragment in err, (fragment, err)
    # The English dev file is read for training and for selection; its one bad line is one problem.
    assert err.count("en.tsv, line 7") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------- in process


def _request(tmp: Path, **kw: object):
    from xbench.run.request import RunRequest

    args = {"method": "source", "task": "xnli", "langs": ["de"], "seeds": [1], "data_dir": str(tmp / "data"),
            "output_dir": str(tmp / "out"), "progress": False, **kw}
    return RunRequest(**args)  # type: ignore[arg-type]


def test_problems_are_found_before_the_encoder_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xbench.run import orchestrate as pipeline
    from xbench.methods.source import SourceMethod

    def built(self: object, lang: object) -> None:
        raise AssertionError("the encoder was built before the data was checked")

    monkeypatch.setattr(SourceMethod, "build_encoder", built)
    xnli_root(tmp_path / "data", bad_train_line=2241)  # the last line of the training part
    with pytest.raises(ConfigError, match=r"en.tsv, line 2241: field 'label'"):
        pipeline.run(_request(tmp_path))


def test_the_run_reuses_what_the_preflight_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xbench.data import pair_tsv
    from xbench.run.request import data_plan, resolve
    from xbench.run.preflight import run_problems

    calls: list[str] = []
    real = pair_tsv.read_per_language_tsv

    def counting(path: Path, *args: object) -> object:
        calls.append(Path(path).name)
        return real(path, *args)

    monkeypatch.setattr(pair_tsv, "read_per_language_tsv", counting)
    xnli_root(tmp_path / "data")
    rr = resolve(_request(tmp_path))
    assert run_problems(rr) == []
    assert sorted(calls) == ["de.tsv", "en.tsv"]  # en dev holds both the training and the selection part
    task_type = rr.card.task_type_impl({})
    for lang, split, for_eval in data_plan(rr, "shared").reads(task_type):
        task_type.load(lang, split, str(tmp_path / "data"), for_eval=for_eval)
    assert sorted(calls) == ["de.tsv", "en.tsv"]
    # A file changed after the pre-flight is read again, not served stale.
    _write(tmp_path / "data" / "xnli" / "test" / "de.tsv", _xnli_lines(33))
    assert len(task_type.load("de", "test", str(tmp_path / "data"), for_eval=True).examples) == 33
    assert sorted(calls) == ["de.tsv", "de.tsv", "en.tsv"]


def test_plan_reads_follow_the_protocol_and_the_method_scope(tmp_path: Path) -> None:
    from xbench.run.request import data_plan, resolve

    xnli_root(tmp_path / "data")
    rr = resolve(_request(tmp_path, langs=["de", "fr"], protocol="in-language"))
    task_type = rr.card.task_type_impl({})
    assert data_plan(rr, "per-language").reads(task_type) == [
        ("de", "dev-train", False), ("de", "dev-heldout", True), ("de", "test", True),
        ("fr", "dev-train", False), ("fr", "dev-heldout", True), ("fr", "test", True)]
    rr = resolve(_request(tmp_path, langs=["de", "fr"]))
    assert data_plan(rr, "shared").reads(task_type) == [
        ("en", "dev-train", False), ("en", "dev-heldout", True), ("de", "test", True), ("fr", "test", True)]


# ----------------------------------------------------------------------------- method parameters


@pytest.mark.parametrize(("value", "default", "expected"), [
    ("false", True, False), ("True", False, True), ("0", True, False), ("300", 1, 300), ("1e6", 1, 1_000_000),
    ("5e-4", 0.1, 5e-4), ("2", 0.1, 2.0), ("x", "", "x"), ("abc", None, "abc"), (7, 1, 7),
])
def test_parameters_parse_by_the_default_type(value: object, default: object, expected: object) -> None:
    from xbench.methods.base import parse_param

    got = parse_param(value, default)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("value", "default", "message"), [
    ("abc", 1, "expected an integer"), ("1.5", 1, "expected an integer"), ("abc", 0.5, "expected a number"),
    ("nan", 0.5, "expected a number"), ("maybe", True, "expected a boolean"),
])
def test_bad_parameter_values_name_the_expected_type(value: str, default: object, message: str) -> None:
    from xbench.methods.base import parse_param

    with pytest.raises(ValueError, match=message):
        parse_param(value, default)


def test_method_parameter_problems_are_collected(tmp_path: Path) -> None:
    from xbench.methods.base import RunContext
    from xbench.methods.scratch import ScratchMethod
    from xbench.profiles import load_profile

    ctx = RunContext(profile=load_profile("smoke"), model="xbench/tiny-en-bert", data_dir=None,
                     params={"budget_tokens": "abc", "pretrain_seed": "1.5", "nosuch": "1"})
    with pytest.raises(ConfigError) as exc:
        ScratchMethod(ctx)
    assert len(exc.value.problems) == 3
    msg = str(exc.value)
    assert "--param budget_tokens=abc: expected an integer, got 'abc'" in msg
    assert "--param pretrain_seed=1.5: expected an integer" in msg and "no parameter 'nosuch'" in msg
    ctx.params = {"budget_tokens": "-5"}
    with pytest.raises(ConfigError, match="budget_tokens must be at least 0"):
        ScratchMethod(ctx)
    ctx.params = {"budget_tokens": "1e6"}
    assert ScratchMethod(ctx).budget() == 1_000_000


# ----------------------------------------------------------------------------- non-UTF-8 data files


def _bad_bytes_conllu() -> bytes:
    return GOOD_TREE.encode().replace(b"Dogs", b"D\xf6gs")


@pytest.mark.parametrize(("name", "data", "line"), [
    ("xnli.tsv", b"p\th\tneutral\np\th\tneutral\n\xff\th\tneutral\n", 3),
    ("squad.json", b'{"data": [\n\n "\xc3"]}', 3),
    ("tree.conllu", _bad_bytes_conllu(), 2),
    ("panx.tsv", b"John\tB-PER\n\nM\xe4ry\tB-PER\n", 3),
])
def test_non_utf8_bytes_name_the_file_and_line(tmp_path: Path, name: str, data: bytes, line: int) -> None:
    from xbench.data.conllu_io import read_conllu
    from xbench.data.pair_tsv import read_per_language_tsv
    from xbench.data.panx import read_panx
    from xbench.data.squad import read_squad

    readers = {"xnli.tsv": lambda p: read_per_language_tsv(p, list(LABELS), set()),
               "squad.json": lambda p: read_squad(p, require_answers=True), "tree.conllu": read_conllu,
               "panx.tsv": read_panx}
    path = _write(tmp_path / name, data)
    with pytest.raises(DataFormatError, match=rf"{name}, line {line}: not (valid )?UTF-8") as exc:
        readers[name](path)
    assert exc.value.line == line


# ----------------------------------------------------------------------------- model folders


def test_model_folder_problems_are_named(tmp_path: Path) -> None:
    from xbench.run.preflight import model_problems

    # The tiny source model is built from English text of the data roots: without any, that is a
    # pre-flight problem saying why English is needed; with one, none.
    assert "from the 'en' text of the data roots" in model_problems("xbench/tiny-en-bert")[0]
    assert model_problems("xbench/tiny-en-bert", xnli_root(tmp_path / "root")) == []
    assert model_problems("bert-base-cased") == []
    assert "unknown xbench model" in model_problems("xbench/tiny-xx-bert")[0]
    assert "no such folder" in model_problems(str(tmp_path / "nope"))[0]
    _write(tmp_path / "file", "x")
    assert "is a file" in model_problems(str(tmp_path / "file"))[0]
    folder = tmp_path / "m"
    folder.mkdir()
    problems = " | ".join(model_problems(str(folder)))
    assert "has no config.json" in problems and "no model weights" in problems and "no tokenizer files" in problems
    _write(folder / "config.json", "{}")
    assert "field 'model_type' is missing" in " ".join(model_problems(str(folder)))


class _Payload:
    """Unpickling this creates the marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def test_load_pretrained_refuses_pickle_weights_and_folders_without_config(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForMaskedLM

    from xbench.loading import load_pretrained

    marker = tmp_path / "unpickled"
    folder = _pickle_only_model(tmp_path / "model")
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ConfigError, match=r"only safetensors weights \(model.safetensors\)"):
        load_pretrained(AutoModelForMaskedLM, str(folder))
    assert not marker.exists()
    bare = _no_config_model(tmp_path / "bare")
    with pytest.raises(XbenchError, match=r"bare has no config.json"):
        load_pretrained(AutoConfig, str(bare))


def test_a_method_whose_target_has_no_pretraining_text_is_stopped_before_any_build(tmp_path: Path) -> None:
    # scratch pretrains on the target's text pool: a data root with test files for 'de' but no German
    # text (no UD, XNLI dev, XQuAD or Tatoeba file) is reported by the pre-flight, not after the tiny
    # source model (built from the English dev file here) has been trained.
    root = xnli_root(tmp_path / "root")
    proc = subprocess.run([sys.executable, "-m", "xbench", "run", "--method", "scratch", "--task", "xnli",
                           "--langs", "de", "--seeds", "1", "--data-dir", str(root),
                           "--output-dir", str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**{k: v for k, v in os.environ.items() if k not in ("XBENCH_DATA", "COLUMNS")},
                               "PYTHONPATH": str(REPO), "XBENCH_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pretraining text for 'de' is needed by this method" in proc.stderr and "xnli/dev/de.tsv" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    from xbench.data.pools import pool_problem

    assert pool_problem("en", root) is None
