"""CI's check of a sweep (docs/sweeps.md): the Slurm sweep and the local sweep of one grid wrote the same results
(scores and config hashes, file by file) and leaderboards, and built each encoder once.

    python tools/compare_sweeps.py SLURM_RESULTS LOCAL_RESULTS GRID_NAME
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(slurm: Path, local: Path, grid: str) -> int:
    problems = []
    ours = sorted(p.relative_to(slurm) for p in slurm.glob("*/*/*/*/*/seed-*.json"))
    theirs = sorted(p.relative_to(local) for p in local.glob("*/*/*/*/*/seed-*.json"))
    if not ours or ours != theirs:
        problems.append(f"result files differ: slurm {len(ours)}, local {len(theirs)}")
    for rel in ours:
        a, b = (json.loads((root / rel).read_text()) for root in (slurm, local))
        if a["scores"] != b["scores"] or a["config_hash"] != b["config_hash"]:
            problems.append(f"{rel}: scores or config differ between the two sweeps")
    for md in sorted((slurm / "leaderboards").glob("*.md")):
        other = local / "leaderboards" / md.name
        if not other.is_file() or _table_rows(md) != _table_rows(other):
            problems.append(f"leaderboard {md.name} differs")
    for root in (slurm, local):
        state = json.loads((root / ".sweep" / grid / "state.json").read_text())
        encoders = [j for j in state["jobs"] if j["kind"] == "encoder"]
        runs = [j for j in state["jobs"] if j["kind"] == "run"]
        bad = [j["label"] for j in state["jobs"] if j["state"] not in ("done", "skipped")]
        if bad:
            problems.append(f"{root}: jobs not done: {bad}")
        if len({tuple(j["needs"]) for j in runs}) != len(encoders):
            problems.append(f"{root}: {len(encoders)} encoder jobs for {len(runs)} runs")
        print(f"{root}: {len(encoders)} encoder job(s), {len(runs)} run job(s):")
        for j in state["jobs"]:
            secs = "" if j["started"] is None else f"{(j['ended'] or j['started']) - j['started']:.0f} s"
            print(f"  {j['state']:8} {secs:>6}  {j['label']}  [{j['scheduler_id']}]")
    for p in problems:
        print("problem:", p)
    return 1 if problems else 0


def _table_rows(path: Path) -> list[str]:
    """The leaderboard's table rows (its title line names the results folder, which differs)."""
    return [line for line in path.read_text().splitlines() if line.startswith("|")]


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
