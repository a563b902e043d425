"""Mean and standard deviation over seeds, per (task, protocol, profile, method, model, unit).

Values are kept per seed, never as position-matched lists: a seed that lacks a language must not
shift the others, and an average is taken over the seeds that have every unit it averages.
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from xbench.errors import XbenchError
from xbench.results.averages import unit_sets
from xbench.results.schema import protocol_label
from xbench.results.transductive import row_flag

RowKey = tuple[str, str, str, str, str]  # task, protocol, profile, method, model


class Stat(NamedTuple):
    """Mean and sample std over the seeds listed (std 0.0 for one seed)."""

    mean: float
    std: float
    n: int
    seeds: tuple[int, ...]


def stat_of(per_seed: dict[int, float]) -> Stat | None:
    if not per_seed:
        return None
    seeds = tuple(sorted(per_seed))
    vals = [per_seed[s] for s in seeds]
    return Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals), seeds)


@dataclass
class Row:
    key: RowKey
    kind: str
    metric: str
    per_lang: dict[str, dict[int, float]] = field(default_factory=dict)  # unit -> seed -> value
    seeds: list[int] = field(default_factory=list)
    paths: dict[int, str] = field(default_factory=dict)
    compute: list[dict[str, Any]] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    transductive: list[str] = field(default_factory=list)
    eval_splits: set[str] = field(default_factory=set)
    excludes: set[str] = field(default_factory=set)
    task_version: int = 0
    data_hashes: set[str] = field(default_factory=set)
    commits: set[str] = field(default_factory=set)
    xbench_versions: set[str] = field(default_factory=set)
    compared_with: str = ""
    reports: list[dict[str, Any]] = field(default_factory=list)
    warned: dict[str, dict[str, set[int]]] = field(default_factory=dict)  # kind -> unit -> seeds

    @property
    def method(self) -> str:
        return self.key[3]

    def stats(self, unit: str) -> Stat | None:
        return stat_of(self.per_lang.get(unit, {}))

    def complete_seeds(self, units: list[str]) -> list[int]:
        return [s for s in self.seeds if all(s in self.per_lang.get(u, {}) for u in units)]

    def average_per_seed(self, units: list[str]) -> dict[int, float]:
        """Macro average over `units` for each seed that has every unit."""
        if not units:
            return {}
        return {s: statistics.fmean(self.per_lang[u][s] for u in units) for s in self.complete_seeds(units)}

    def average(self, units: list[str]) -> Stat | None:
        """Macro average over `units` per seed, then mean/std over the seeds that have every unit."""
        return stat_of(self.average_per_seed(units))

    def average_note(self, units: list[str], label: str = "avg") -> str | None:
        """Which seeds an average leaves out and why, when it leaves out some but not all."""
        used = self.complete_seeds(units)
        if not units or not used or len(used) == len(self.seeds):
            return None
        why = "; ".join(f"seed {s} lacks {', '.join(u for u in units if s not in self.per_lang.get(u, {}))}"
                        for s in self.seeds if s not in used)
        return f"{label} over seed{'s' if len(used) > 1 else ''} {','.join(map(str, used))} ({why})"

    def all_flags(self) -> list[str]:
        flag = row_flag(self.key[0], self.transductive)
        warned = {f"warning: {kind}: " + ", ".join(f"{unit}{self._seed_note(seeds)}" for unit, seeds in sorted(units.items()))
                  for kind, units in self.warned.items()}
        return sorted(self.flags | warned | ({flag} if flag else set()))

    def _seed_note(self, seeds: set[int]) -> str:
        if len(self.seeds) == 1:
            return ""
        if len(seeds) == len(self.seeds):
            return " (every seed)"
        return f" (seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, sorted(seeds)))})"


def group_sets(rows: Iterable[Row]) -> dict[str, list[str]]:
    """The units of each named average for rows shown (or checked) together: every unit any of them
    scored, without the languages their results exclude. A row lacking one of them has no average."""
    rows = list(rows)
    units = sorted({u for r in rows for u in r.per_lang})
    return unit_sets(units, set().union(*(r.excludes for r in rows)) if rows else ())


def split_model_label(label: str) -> tuple[str, str | None]:
    """(model name, source-text hash or None) of a row's model label."""
    name, sep, text_hash = label.rpartition("@")
    if sep and len(text_hash) == 8 and all(c in "0123456789abcdef" for c in text_hash):
        return name, text_hash
    return label, None


def model_label(result: dict[str, Any]) -> str:
    """The model part of a row's identity. A model xbench builds from the data roots' text (the tiny
    smoke models) is named with the hash of that text, so runs whose source model learnt from other
    text (another --data-dir) never share a row, a seed count or a reference entry."""
    text_hash = result["model"].get("source_text_hash")
    return f"{result['model']['name']}@{text_hash[:8]}" if text_hash else result["model"]["name"]


def aggregate(results: list[dict[str, Any]], metric: str | None = None) -> dict[RowKey, Row]:
    """Rows for one metric (the primary one of each result by default).

    Two results with one identity (the same seed of the same row) are an error: a copied file
    would otherwise count as a second seed.
    """
    rows: dict[RowKey, Row] = {}
    for r in sorted(results, key=lambda r: r["run"]["seed"]):
        key = (r["task"]["name"], protocol_label(r), r["run"]["profile"], r["method"]["name"], model_label(r))
        row = rows.setdefault(key, Row(key, r["method"].get("kind", "transfer"), metric or r["scores"]["metric"]))
        seed = r["run"]["seed"]
        path = r.get("_path", "(a result not read from a file)")
        if seed in row.paths:
            raise XbenchError(f"two results for seed {seed} of {'/'.join(key)}: {row.paths[seed]} and {path}; "
                              "a seed counts once, remove or move one of them")
        row.paths[seed] = path
        row.seeds.append(seed)
        row.compared_with = r["method"].get("compared_with", "scratch" if row.kind == "transfer" else "")
        if r.get("report"):
            row.reports.append(r["report"])
        for unit, s in r["scores"]["per_language"].items():
            if row.metric in s:
                row.per_lang.setdefault(unit, {})[seed] = float(s[row.metric])
        row.excludes.update(r["scores"].get("average_excludes", []))
        row.compute.append(r["compute"])
        flags = r.get("flags", {})
        row.transductive.extend(flags.get("transductive", []))
        for warning in flags.get("warnings", []):
            unit, _, rest = warning.partition(": ")
            kind, sep, _detail = rest.partition(": ")
            if sep:  # `<unit>: <kind>: <detail>`: gathered over seeds, since the detail differs per seed
                row.warned.setdefault(kind, {}).setdefault(unit, set()).add(seed)
            else:
                row.flags.add(warning if warning.lower().startswith("warning") else f"warning: {warning}")
        split = r["run"].get("eval_split") or flags.get("eval_split")
        row.eval_splits.add(split if isinstance(split, str) and split else "?")
        if flags.get("data_setting") == "shared":
            row.flags.add("shared-data")
        if flags.get("xbench_reconstruction"):
            row.flags.add("xbench reconstruction")
        for slot in flags.get("fallback", []):  # a shared-data stand-in for a data slot (docs/protocols.md)
            row.flags.add(f"fallback: {slot}")
        for prov in (r["task"].get("data") or {}).values():  # a protocol that code-switches its training data
            switch = ((prov or {}).get("selection") or {}).get("code_switch") if isinstance(prov, dict) else None
            if switch:
                row.flags.add(f"code-switched training (p_switch {switch['p_switch']:g}, originals {switch['originals']})")
        if r["method"].get("finetune_changes"):  # not fine-tuned like its baseline (docs/methods/README.md)
            row.flags.add("fine-tuning changed by the method: " + ", ".join(r["method"]["finetune_changes"]))
        row.task_version = r["task"]["version"]
        row.data_hashes.add(r["task"].get("data_hash", ""))
        git = r["environment"].get("git") or {}
        row.commits.add((git.get("commit") or "unknown")[:10] + ("+dirty" if git.get("dirty") else ""))
        row.xbench_versions.add(r.get("xbench_version", "?"))
    return rows
