"""A user's own task cards (--tasks-dir, XBENCH_TASKS_DIRS): found beside the built-in ones, run like
them, and a name used twice is an error naming both files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# A UD treebank the package knows nothing of: one card in the user's folder, data under --data-dir.
CARD = """\
name: ud-fr-toy
version: 1
task_type: parsing
description: A French toy treebank, to show that a new treebank needs only this card.
metric: las
metrics: [uas, las, clas]
languages: [fr]
params:
  ud_version: "2.16"
  treebanks: {fr: UD_French-Toy}
  pud: {}
  labels: [acl, advcl, advmod, amod, appos, aux, case, cc, ccomp, clf, compound, conj, cop, csubj, dep, det,
           discourse, dislocated, expl, fixed, flat, goeswith, iobj, list, mark, nmod, nsubj, nummod, obj, obl,
           orphan, parataxis, punct, reparandum, root, vocative, xcomp]
  max_length: 128
data:
  local: ["{treebank}"]
  download: https://universaldependencies.org/#download
default_protocol: in-language
protocols:
  in-language:
    description: Train on the toy train file, select on its dev file, evaluate on its test file.
    train: {lang: "{target}", split: train}
    select: {lang: "{target}", split: dev}
    eval: {split: test}
"""

SENTENCES = [
    ("Le chat dort .", [("Le", 2, "det"), ("chat", 3, "nsubj"), ("dort", 0, "root"), (".", 3, "punct")]),
    ("Marie lit un livre", [("Marie", 2, "nsubj"), ("lit", 0, "root"), ("un", 4, "det"), ("livre", 2, "obj")]),
    ("Il pleut", [("Il", 2, "expl:subj"), ("pleut", 0, "root")]),
]


def _conllu() -> str:
    out = []
    for i, (text, words) in enumerate(SENTENCES, 1):
        out += [f"# sent_id = s{i}", f"# text = {text}"]
        out += ["\t".join([str(k), w, w.lower(), "_", "_", "_", str(h), r, "_", "_"]) for k, (w, h, r) in enumerate(words, 1)]
        out.append("")
    return "\n".join(out) + "\n"


@pytest.fixture
def user_tasks(tmp_path: Path) -> tuple[Path, Path]:
    """(the user's card folder, a data root holding the card's treebank as a UD release ships it)."""
    cards = tmp_path / "my-tasks"
    cards.mkdir()
    (cards / "ud-fr-toy.yaml").write_text(CARD, encoding="utf-8")
    treebank = tmp_path / "data" / "UD_French-Toy"
    treebank.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (treebank / f"fr_toy-ud-{split}.conllu").write_text(_conllu(), encoding="utf-8")
    return cards, tmp_path / "data"


def xbench(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("XBENCH_TASKS", "XBENCH_TASKS_DIRS")}
    return subprocess.run([sys.executable, "-m", "xbench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**environ, "PYTHONPATH": str(REPO), **(env or {})})


@pytest.fixture(autouse=True)
def _no_cli_dirs():
    from xbench.cards import set_cli_tasks_dirs

    yield
    set_cli_tasks_dirs([])  # in-process tests must not leave their folders to the next test


def test_validate_and_list_show_a_user_card_beside_the_builtin_ones(user_tasks, tmp_path: Path) -> None:
    cards, _ = user_tasks
    proc = xbench("validate", "--tasks-dir", str(cards), cwd=tmp_path)
    assert proc.returncode == 0 and "ok: 7 task cards" in proc.stdout, proc.stdout + proc.stderr
    for how in (["--tasks-dir", str(cards)], []):  # the option, then the environment variable
        proc = xbench("list", *how, cwd=tmp_path, env={} if how else {"XBENCH_TASKS_DIRS": str(cards)})
        assert proc.returncode == 0, proc.stderr
        assert "ud-fr-toy v1" in proc.stdout and "xnli v1" in proc.stdout and "ud v1" in proc.stdout
    assert "ud-fr-toy" not in xbench("list", cwd=tmp_path).stdout


def test_a_user_card_reads_its_treebank_from_the_data_dir(user_tasks) -> None:
    from xbench.cards import get_task, set_cli_tasks_dirs

    cards, data = user_tasks
    set_cli_tasks_dirs([cards])
    card = get_task("ud-fr-toy")
    assert card.path == cards / "ud-fr-toy.yaml"
    split = card.task_type_impl().load("fr", "train", data, for_eval=False)
    assert [len(s) for s in split.examples] == [4, 4, 2]
    assert split.provenance.files[0]["path"].endswith("fr_toy-ud-train.conllu")


def test_name_clashes_name_both_files(user_tasks, tmp_path: Path) -> None:
    cards, _ = user_tasks
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "ud.yaml").write_text((REPO / "tasks" / "ud.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    proc = xbench("validate", "--tasks-dir", str(shadow), cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"task 'ud' is defined twice: {shadow / 'ud.yaml'} and " in proc.stdout
    assert "ud.yaml (a built-in card)" in proc.stdout
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / "ud-fr-toy.yaml").write_text(CARD, encoding="utf-8")
    proc = xbench("run", "--method", "source", "--task", "ud-fr-toy", "--langs", "fr", "--tasks-dir", str(cards),
                  "--output-dir", str(tmp_path / "out"), cwd=tmp_path, env={"XBENCH_TASKS_DIRS": str(twin)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (f"task 'ud-fr-toy' is defined twice: {twin / 'ud-fr-toy.yaml'} and {cards / 'ud-fr-toy.yaml'} "
            "(another user card)") in proc.stderr
    assert not (tmp_path / "out").exists()


def test_bad_folders_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xbench.cards import validate_all_cards

    (tmp_path / "yml").mkdir()
    (tmp_path / "yml" / "mine.yml").write_text(CARD, encoding="utf-8")
    monkeypatch.setenv("XBENCH_TASKS_DIRS", os.pathsep.join([str(tmp_path / "absent"), str(tmp_path / "yml")]))
    _, problems = validate_all_cards()
    assert problems == [f"XBENCH_TASKS_DIRS {tmp_path / 'absent'}: no such folder",
                        f"XBENCH_TASKS_DIRS {tmp_path / 'yml'}: holds no task card (*.yaml); rename mine.yml to .yaml"]


def test_xbench_tasks_still_replaces_the_builtin_cards(user_tasks, monkeypatch: pytest.MonkeyPatch) -> None:
    from xbench.cards import all_cards

    cards, _ = user_tasks
    monkeypatch.setenv("XBENCH_TASKS", str(cards))
    assert list(all_cards()) == ["ud-fr-toy"]


def test_a_run_with_a_user_card(user_tasks, tmp_path: Path) -> None:
    """The whole run: the card from --tasks-dir, its treebank from --data-dir, two fine-tuning steps.
    The smoke source model is built into the default cache the first time (a minute or two)."""
    if not os.environ.get("XBENCH_DATA"):
        pytest.skip("the smoke source model is built from the shared data: set XBENCH_DATA")
    cards, data = user_tasks
    out = tmp_path / "out"
    proc = xbench("run", "--method", "source", "--task", "ud-fr-toy", "--langs", "fr", "--tasks-dir", str(cards),
                  "--data-dir", str(data), "--set", "finetune.max_steps=2", "--set", "finetune.eval_every=1",
                  "--output-dir", str(out), cwd=tmp_path,
                  env={"XBENCH_DATA": str(Path(os.environ["XBENCH_DATA"]).resolve())})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = out.rglob("seed-*.json")
    r = json.loads(result.read_text(encoding="utf-8"))
    assert r["task"]["name"] == "ud-fr-toy" and r["run"]["protocol"] == "in-language"
    assert set(r["scores"]["per_language"]) == {"fr"}
    assert any("fr_toy-ud-test.conllu" in json.dumps(v) for v in r["task"]["data"].values())
