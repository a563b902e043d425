"""Many processes writing into one results folder and one cache at once, as the jobs of a sweep do
(docs/sweeps.md, "Shared results and cache"): every file stays whole and every cache entry is built
exactly once. The figures (writers, files, corrupt files) are printed for the closing note."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

WRITERS = 8
KEYS = 4
ROUNDS = 25


def _writer(args: tuple[int, str, str]) -> int:
    index, results, cache = args
    os.environ["XBENCH_CACHE"] = cache
    from xbench import cache as xcache
    from xbench.atomic import atomic_write_json

    built = 0
    for r in range(ROUNDS):
        # the same result paths from every writer: a reader must never see half a file
        atomic_write_json(Path(results) / f"task/seed-{r % 5}.json", {"writer": index, "round": r, "pad": "x" * 4000})

        def build(out: Path, work: Path, key: int = r % KEYS) -> dict:
            (out / "model.bin").write_bytes(os.urandom(1 << 16))
            with open(Path(cache) / "builds.log", "a") as log:  # one line per build that really ran
                log.write(f"{key}\n")
            return {"key": key}

        path, did = xcache.get_or_build_status("encoders", {"test-key": r % KEYS}, build)
        built += did
        assert (path / "model.bin").stat().st_size == 1 << 16
    return built


def test_many_writers_on_one_results_folder_and_cache(tmp_path):
    results, cache = tmp_path / "results", tmp_path / "cache"
    cache.mkdir()
    with mp.get_context("spawn").Pool(WRITERS) as pool:
        built = pool.map(_writer, [(i, str(results), str(cache)) for i in range(WRITERS)])
    files = sorted(results.rglob("*.json"))
    corrupt = 0
    for f in files:
        try:
            json.loads(f.read_text())
        except ValueError:
            corrupt += 1
    lines = (cache / "builds.log").read_text().split()
    print(f"\nconcurrency: {WRITERS} writers x {ROUNDS} rounds, {len(files)} result files, {corrupt} corrupt; "
          f"{KEYS} cache keys, {len(lines)} builds")
    assert corrupt == 0 and len(files) == 5
    assert sorted(lines) == [str(k) for k in range(KEYS)] and sum(built) == KEYS  # each entry built once
    leftovers = [p for p in (cache / "encoders").iterdir() if not p.name.endswith(".lock") and
                 not (p / "entry.json").is_file()]
    assert leftovers == []  # no half-written entry or temporary folder left
    assert [p.name for p in results.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"] == []
