"""Cache hygiene (issue 9 C.18) and atomic tokenizer/model saves (B.13).

`xbench cache ls` shows half-built work folders, stale temporaries, locks and the feature cache;
`xbench cache rm --all` removes them, except what a live build holds; a temporary left by a
killed process is removed by the next write of the same target.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xbench import cache
from xbench.atomic import atomic_dir, owner_tag, reuse_or_clear, save_pretrained_atomic, saved_complete
from xbench.tasktypes.base import cached_features

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _killed_inside(code: str, target: Path) -> None:
    """Run `code` in a child that SIGKILLs itself where the code says KILL."""
    script = ("import os, signal, sys\nfrom pathlib import Path\n"
              "from xbench.atomic import atomic_dir, save_pretrained_atomic\n"
              "KILL = lambda: os.kill(os.getpid(), signal.SIGKILL)\n"
              f"target = Path({str(target)!r})\n" + code)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def _failing_build(out: Path, work: Path) -> None:
    (work / "partial.txt").write_text("resumable state")
    raise RuntimeError("killed")


def _half_built(kind: str, key: dict) -> Path:
    with pytest.raises(RuntimeError):
        cache.get_or_build(kind, key, _failing_build)
    return cache.entry_path(kind, key)


def _xbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xbench", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "200"})


def _populate(root: Path) -> dict[str, Path]:
    ready = cache.get_or_build("encoders", {"k": 1}, lambda out, work: {"ok": True})
    half = _half_built("encoders", {"k": 2})
    cached_features({"t": 1}, lambda: [{"input_ids": [1, 2, 3], "labels": 0}])
    stale = cache.entry_path("encoders", {"k": 3})
    _killed_inside("with atomic_dir(target) as tmp:\n    (tmp / 'model.safetensors').write_bytes(b'x' * 100)\n    KILL()\n",
                   stale)
    return {"ready": ready, "half": half, "stale_parent": stale.parent, "stale_id": stale.name}


def test_ls_shows_every_kind_of_item(root):
    made = _populate(root)
    by_id = {(r["kind"], r["id"]): r for r in cache.cache_items()}
    assert by_id[("encoders", made["ready"].name)]["status"] == "ready"
    assert by_id[("encoders", made["half"].name + ".work")]["status"] == "half-built"
    assert by_id[("encoders", made["half"].name + ".lock")]["status"] == "stale"
    stale = [r for r in by_id.values() if r["id"].startswith(f".{made['stale_id']}.")]
    assert len(stale) == 1 and stale[0]["status"] == "stale" and stale[0]["bytes"] == 100
    features = by_id[("features", "1 files")]
    assert features["status"] == "ready" and features["bytes"] > 0
    out = _xbench("cache", "ls")
    assert out.returncode == 0, out.stderr
    for text in ("half-built", "stale", "features", made["half"].name + ".work", stale[0]["id"]):
        assert text in out.stdout


def test_rm_all_removes_everything_not_in_use(root):
    made = _populate(root)
    busy = _half_built("finetuned", {"k": 9})
    with cache._locked(busy.with_name(busy.name + ".lock")):
        out = _xbench("cache", "rm", "--all")
        assert out.returncode == 0, out.stderr
        assert "kept 3 in use" in out.stdout  # the busy work folder, its lock and its lease
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_dir())
    assert left == ["encoders", "features", "finetuned", f"finetuned/{busy.name}.lock", f"finetuned/{busy.name}.work",
                    f"finetuned/{busy.name}.work/partial.txt"]
    assert not made["ready"].exists()


def test_rm_kind_features_removes_only_the_feature_cache(root):
    made = _populate(root)
    assert cache.clean_cache("features") == {"ready": 1}
    assert not any((root / "features").iterdir()) and made["ready"].exists() and made["half"].with_name(
        made["half"].name + ".work").exists()


def test_temporary_of_a_killed_process_is_removed_by_the_next_write(root):
    target = root / "encoders" / "abc"
    _killed_inside("with atomic_dir(target) as tmp:\n    (tmp / 'x').write_text('half')\n    KILL()\n", target)
    leftovers = list(target.parent.glob(".abc.*.tmp"))
    assert len(leftovers) == 1
    # A temporary whose creator is alive (this process) is someone's write in progress: kept.
    live = target.parent / f".abc.{owner_tag()}.live0000.tmp"
    live.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("whole")
    assert not leftovers[0].exists() and live.exists()
    assert (target / "x").read_text() == "whole"


def test_temporary_older_than_the_process_with_its_pid_is_stale(root):
    """A reused pid does not keep a temporary alive: its creator started before the process now holding it."""
    target = root / "encoders" / "abc"
    target.parent.mkdir(parents=True)
    old = target.parent / f".abc.{owner_tag()}.old00000.tmp"
    old.mkdir()
    long_ago = time.time() - 10 * 365 * 86400
    os.utime(old, (long_ago, long_ago))
    with atomic_dir(target):
        pass
    assert not old.exists()


# ------------------------------------------------------------------------------- B.13
class _HalfSaver:
    """save_pretrained that dies after writing half a tokenizer.json."""

    def save_pretrained(self, path):
        Path(path, "tokenizer.json").write_text('{"version": "1.0", "model": {"vocab": {"[PAD]"')
        os.kill(os.getpid(), signal.SIGKILL)


def test_kill_during_tokenizer_save_leaves_nothing_to_reuse(root, tmp_path):
    work = tmp_path / "work"
    tok_dir = work / "tokenizer"
    _killed_inside("from tests.test_cache_hygiene import _HalfSaver\nsave_pretrained_atomic(_HalfSaver(), target)\n",
                   tok_dir)
    assert not tok_dir.exists()
    assert not reuse_or_clear(tok_dir)


def test_truncated_folder_from_an_old_in_place_save_is_not_reused(tmp_path):
    """What a kill left before saves were atomic: a tokenizer.json cut short, and a run on top of it."""
    work = tmp_path / "work"
    (work / "tokenizer").mkdir(parents=True)
    (work / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0", "mod')
    (work / "run" / "checkpoints").mkdir(parents=True)
    assert not reuse_or_clear(work / "tokenizer", also=(work / "run",))
    assert not (work / "tokenizer").exists() and not (work / "run").exists()


def test_whole_save_is_reused(tmp_path):
    from xbench.vocab.wordpiece import train_wordpiece

    tok = train_wordpiece(["Hamburg is a city in Germany", "Berlin is its capital"] * 5, 80)
    save_pretrained_atomic(tok, tmp_path / "tokenizer")
    assert saved_complete(tmp_path / "tokenizer") and reuse_or_clear(tmp_path / "tokenizer")
    json.loads((tmp_path / "tokenizer" / "tokenizer.json").read_text())
