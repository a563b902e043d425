"""`xbench sweep`: a grid of methods × tasks × languages × seeds run as jobs through submitit, locally or on
Slurm, filling one results folder (docs/sweeps.md). grid.py reads and checks the grid, jobs.py expands
it to encoder-build and run jobs, execute.py submits and follows them and keeps the state file."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from xbench.errors import ConfigError, XbenchError
from xbench.run.sweep.execute import SlurmOptions, SweepState, run_local, run_slurm, sweep_folder
from xbench.run.sweep.grid import Grid, grid_problems, read_grid
from xbench.run.sweep.jobs import plan_jobs

__all__ = ["Grid", "SlurmOptions", "check_grid", "read_grid", "run_sweep", "sweep_status"]


def check_grid(path: str | Path, results_dir: str | Path | None = None) -> Grid:
    """The grid of `path` with every problem of the file and of its runs reported at once (ConfigError)."""
    grid = read_grid(path, results_dir)
    problems = grid_problems(grid)
    if problems:
        raise ConfigError(problems, source=f"grid {path}")
    return grid


def run_sweep(path: str | Path, *, executor: str = "local", max_parallel: int = 2, slurm: SlurmOptions | None = None,
              force: bool = False, console: Any = None, results_dir: str | Path | None = None) -> SweepState:
    """Run what the grid still lacks; returns the final state (its `counts()` say how it went)."""
    from xbench.run.preflight import preflight
    from xbench.run.request import resolve

    if executor not in ("local", "slurm"):
        raise XbenchError(f"unknown executor '{executor}'; valid: local, slurm")
    grid = check_grid(path, results_dir)
    problems: list[str] = []
    for req in grid.requests():  # every data file and method check of every run, before any job starts
        try:
            preflight(resolve(req))
        except XbenchError as exc:
            problems += [f"{req.method} × {req.task}: {p}" for p in getattr(exc, "problems", [str(exc)])]
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)), source=f"grid {path} (checked before any work)")
    jobs, skipped = plan_jobs(grid, force=force)
    state = SweepState(sweep_folder(grid), jobs, skipped, executor)
    state.save()
    view = _LiveView(state, console) if console is not None else None
    started = time.time()
    try:
        if view is not None:
            view.start()
        on_change = view.refresh if view is not None else (lambda: None)
        if executor == "local":
            run_local(state, max_parallel, on_change)
        else:
            run_slurm(state, slurm or SlurmOptions(), on_change)
    finally:
        if view is not None:
            view.stop()
    state.seconds = time.time() - started  # type: ignore[attr-defined]
    return state


def sweep_status(path: str | Path, results_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Every job of the grid's last sweep with its state, log and result file, from the state file; a run
    whose result file exists counts as done whatever the scheduler said."""
    grid = read_grid(path, results_dir)
    state_file = sweep_folder(grid) / "state.json"
    if not state_file.is_file():
        raise XbenchError(f"no sweep of {path} has started here (no {state_file}); run `xbench sweep {path}` first")
    rows = json.loads(state_file.read_text(encoding="utf-8"))["jobs"]
    for row in rows:
        if row["kind"] == "run" and row.get("result") and Path(row["result"]).is_file() and row["state"] != "skipped":
            row["state"] = "done"
    return rows


class _LiveView:
    """A live table of the jobs and a progress bar (rich), redrawn when a job changes state."""

    def __init__(self, state: SweepState, console: Any) -> None:
        from rich.live import Live

        self.state, self.console = state, console
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        table = Table(title=f"xbench sweep ({self.state.executor})", show_lines=False)
        for col in ("job", "kind", "state", "s", "log"):
            table.add_column(col)
        colours = {"done": "green", "failed": "red", "running": "yellow", "pending": "dim", "skipped": "cyan"}
        now = time.time()
        for job_id, job in self.state.jobs.items():
            row = self.state.rows[job_id]
            secs = "" if row["started"] is None else f"{(row['ended'] or now) - row['started']:.0f}"
            table.add_row(job.label, job.kind, f"[{colours[row['state']]}]{row['state']}[/]", secs,
                          row["stderr"] or "")
        counts = self.state.counts()
        total = len(self.state.rows)
        ended = counts["done"] + counts["failed"] + counts["skipped"]
        summary = " · ".join(f"{k} {v}" for k, v in counts.items() if v)
        return Group(table, ProgressBar(total=total, completed=ended, width=60), summary + "\n")

    def start(self) -> None:
        self.live.start()

    def refresh(self) -> None:
        self.live.update(self._render())

    def stop(self) -> None:
        self.refresh()
        self.live.stop()
