"""Methods and task types from the user's own installed package (entry points `xbench.methods`,
`xbench.task_types`): listed and run like built-in ones, imported only when used, and a name that
is already taken is an error naming the package."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/plugin_pkg installed as a user installs a package (into a folder put on PYTHONPATH)."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"  # a copy: pip builds in the source folder and would leave build/ and egg-info in tests/
    shutil.copytree(REPO / "tests" / "plugin_pkg", src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", "--target",
                    str(tmp / "site"), str(src)], check=True, capture_output=True, text=True, timeout=300)
    return tmp / "site"


def _fake_distribution(site: Path, name: str, entry_points: str) -> None:
    """An installed package as importlib.metadata sees it: only its metadata, no code."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")


def python(*args: str, paths: list[Path], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k not in ("XBENCH_TASKS", "XBENCH_TASKS_DIRS")}, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(map(str, [*paths, REPO]))
    # A whole run may first build the smoke source model (600 MLM steps), or wait for another test that
    # builds it, on two busy cores: minutes, so the limit only catches a hang.
    timeout = 900 if args[:3] == ("-m", "xbench", "run") else 300
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_list_shows_the_plugin_method_and_task_type_without_importing_them(site: Path, tmp_path: Path) -> None:
    proc = python("-m", "xbench", "list", paths=[site], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "toy-copy" in proc.stdout and "xbench-toy-plugin 0.1.0" in proc.stdout
    assert "toy-tagging" in proc.stdout and "xbench_toy_plugin.tasktype:ToyTagging (installed plugin)" in proc.stdout
    probe = ("import sys; from typer.testing import CliRunner; from xbench.cli import app; "
             "r = CliRunner().invoke(app, ['list']); assert r.exit_code == 0, r.output; "
             "print(sorted(m for m in sys.modules if m.startswith('xbench_toy_plugin.')))")
    proc = python("-c", probe, paths=[site], cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_run_reaches_the_plugin_methods_preflight(site: Path, tmp_path: Path) -> None:
    proc = python("-m", "xbench", "run", "--method", "toy-copy", "--task", "xnli", "--langs", "de",
                  "--param", "copies=0", "--param", "colour=red", "--output-dir", str(tmp_path / "out"),
                  paths=[site], cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "method toy-copy: method 'toy-copy' has no parameter 'colour' (valid: copies)" in proc.stderr
    assert "copies must be at least 1, got 0" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing was trained or written


def test_a_card_may_use_the_plugin_task_type(site: Path, tmp_path: Path) -> None:
    cards = tmp_path / "cards"
    cards.mkdir()
    card = (REPO / "tasks" / "panx.yaml").read_text(encoding="utf-8")
    (cards / "toy-ner.yaml").write_text(card.replace("name: panx", "name: toy-ner")
                                        .replace("task_type: token-labelling", "task_type: toy-tagging"), encoding="utf-8")
    proc = python("-m", "xbench", "validate", "--tasks-dir", str(cards), paths=[site], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = python("-c", "import sys; from xbench.cards import get_task, set_cli_tasks_dirs; "
                  f"set_cli_tasks_dirs([{str(cards)!r}]); print(type(get_task('toy-ner').task_type_impl()).__name__)",
                  paths=[site], cwd=tmp_path)
    assert proc.stdout.strip() == "ToyTagging", proc.stderr
    proc = python("-m", "xbench", "validate", "--tasks-dir", str(cards), paths=[], cwd=tmp_path)
    assert proc.returncode == 1 and "task_type 'toy-tagging' is unknown" in proc.stdout


def test_a_plugin_with_a_taken_name_is_an_error_naming_its_package(site: Path, tmp_path: Path) -> None:
    clash = tmp_path / "clash"
    _fake_distribution(clash, "xbench-clash", "[xbench.methods]\nclp = elsewhere:Clp\ntoy-copy = elsewhere:Toy\n")
    for command in (["list"], ["validate"], ["run", "--method", "source", "--task", "xnli", "--langs", "de"]):
        proc = python("-m", "xbench", *command, paths=[site, clash], cwd=tmp_path)
        out = proc.stdout + proc.stderr
        assert proc.returncode in (1, 2) and "Traceback" not in out, out
        assert ("method 'clp' of the installed package xbench-clash 0.1 (entry point xbench.methods: clp = "
                "elsewhere:Clp) has the name of a built-in method") in out
        assert ("method 'toy-copy' is registered by two installed packages: xbench-toy-plugin 0.1.0 "
                "(xbench_toy_plugin.method:ToyCopy) and xbench-clash 0.1 (elsewhere:Toy)") in out


def test_a_plugin_that_cannot_be_loaded_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    _fake_distribution(broken, "xbench-broken", "[xbench.methods]\ntoy-gone = xbench_no_such_module:Gone\n")
    proc = python("-m", "xbench", "run", "--method", "toy-gone", "--task", "xnli", "--langs", "de",
                  "--output-dir", str(tmp_path / "out"), paths=[broken], cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert ("xbench.methods entry point 'toy-gone' of the installed package xbench-broken 0.1: cannot load "
            "xbench_no_such_module:Gone (ModuleNotFoundError") in proc.stderr


def test_a_plugin_whose_class_has_another_name_is_refused(tmp_path: Path) -> None:
    renamed = tmp_path / "renamed"
    _fake_distribution(renamed, "xbench-renamed", "[xbench.methods]\ntoy-renamed = xbench_renamed:Renamed\n")
    (renamed / "xbench_renamed.py").write_text("from xbench.methods.base import Method\n\n\n"
                                               "class Renamed(Method):\n    name = 'toy-other'\n", encoding="utf-8")
    proc = python("-m", "xbench", "run", "--method", "toy-renamed", "--task", "xnli", "--langs", "de",
                  "--output-dir", str(tmp_path / "out"), paths=[renamed], cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert ("entry point 'toy-renamed' of the installed package xbench-renamed 0.1: xbench_renamed:Renamed declares "
            "name = 'toy-other'; it must be 'toy-renamed'") in proc.stderr


def test_a_plugin_method_runs_like_a_builtin_one(site: Path, tmp_path: Path) -> None:
    """A whole run (two fine-tuning steps on a toy treebank); the smoke source model comes from the
    default cache, built there the first time (a minute or two)."""
    import json

    from tests.test_tasks_dir import CARD, _conllu

    if not os.environ.get("XBENCH_DATA"):
        pytest.skip("the smoke source model is built from the shared data: set XBENCH_DATA")
    cards, treebank = tmp_path / "cards", tmp_path / "data" / "UD_French-Toy"
    cards.mkdir()
    treebank.mkdir(parents=True)
    (cards / "ud-fr-toy.yaml").write_text(CARD, encoding="utf-8")
    for split in ("train", "dev", "test"):
        (treebank / f"fr_toy-ud-{split}.conllu").write_text(_conllu(), encoding="utf-8")
    proc = python("-m", "xbench", "run", "--method", "toy-copy", "--param", "copies=2", "--task", "ud-fr-toy",
                  "--langs", "fr", "--tasks-dir", str(cards), "--data-dir", str(tmp_path / "data"),
                  "--set", "finetune.max_steps=2", "--output-dir", str(tmp_path / "out"), paths=[site], cwd=tmp_path,
                  env={"XBENCH_DATA": str(Path(os.environ["XBENCH_DATA"]).resolve())})  # the run's cwd is tmp_path
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = (tmp_path / "out").rglob("seed-*.json")
    r = json.loads(result.read_text(encoding="utf-8"))
    assert r["method"]["name"] == "toy-copy" and r["method"]["kind"] == "transfer"
    assert r["method"]["params"] == {"copies": 2} and r["method"]["compared_with"] == "source"
    assert "/toy-copy/" in result.as_posix()


def test_a_plugin_task_type_is_fine_tuned_with_its_own_settings(site: Path, tmp_path: Path) -> None:
    """The shipped profiles know only the built-in task types; a plugin's task type runs with the
    settings it declares for the profile (`finetune_defaults`), and `--set` still overrides them."""
    import json

    if not os.environ.get("XBENCH_DATA"):
        pytest.skip("the smoke source model is built from the shared data: set XBENCH_DATA")
    cards, data = tmp_path / "cards", tmp_path / "data" / "panx"
    cards.mkdir()
    data.mkdir(parents=True)
    card = (REPO / "tasks" / "panx.yaml").read_text(encoding="utf-8")
    (cards / "toy-ner.yaml").write_text(card.replace("name: panx", "name: toy-ner")
                                        .replace("task_type: token-labelling", "task_type: toy-tagging"), encoding="utf-8")
    sentences = "John\tB-PER\nlives\tO\nin\tO\nParis\tB-LOC\n\nMary\tB-PER\nleft\tO\n\n"
    (data / "train-en.tsv").write_text(sentences * 8, encoding="utf-8")
    (data / "dev-de.tsv").write_text(sentences.replace("lives", "wohnt") * 3, encoding="utf-8")
    proc = python("-m", "xbench", "run", "--method", "source", "--task", "toy-ner", "--langs", "de", "--seeds", "1",
                  "--tasks-dir", str(cards), "--data-dir", str(tmp_path / "data"), "--set", "finetune.max_steps=2",
                  "--output-dir", str(tmp_path / "out"), paths=[site], cwd=tmp_path,
                  env={"XBENCH_DATA": str(Path(os.environ["XBENCH_DATA"]).resolve())})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = (tmp_path / "out").rglob("seed-*.json")
    r = json.loads(result.read_text(encoding="utf-8"))
    assert r["config"]["finetune"] == {"lr": 3.0e-3, "batch_size": 32, "max_steps": 2, "warmup_ratio": 0.1}
    assert r["compute"]["finetune"][0]["optimizer_steps"] == 2 and r["scores"]["per_language"]["de"]["n"] == 6
