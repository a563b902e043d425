"""Mean and standard deviation over seeds, per (task, protocol, profile, method, model, language)."""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from xbench.results.schema import protocol_label

RowKey = tuple[str, str, str, str, str]  # task, protocol, profile, method, model


@dataclass
class Row:
    key: RowKey
    kind: str
    metric: str
    per_lang: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    seeds: list[int] = field(default_factory=list)
    compute: list[dict[str, Any]] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    task_version: int = 0
    data_hashes: set[str] = field(default_factory=set)
    commits: set[str] = field(default_factory=set)
    xbench_versions: set[str] = field(default_factory=set)
    compared_with: str = ""
    reports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def method(self) -> str:
        return self.key[3]

    def stats(self, lang: str) -> tuple[float, float, int] | None:
        vals = self.per_lang.get(lang)
        if not vals:
            return None
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)

    def average(self, langs: list[str]) -> tuple[float, float, int] | None:
        """Macro average over `langs` per seed, then mean/std over seeds; None if any is missing."""
        if any(not self.per_lang.get(lang) for lang in langs) or not langs:
            return None
        n = min(len(self.per_lang[lang]) for lang in langs)
        per_seed = [statistics.fmean(self.per_lang[lang][i] for lang in langs) for i in range(n)]
        return statistics.fmean(per_seed), (statistics.stdev(per_seed) if n > 1 else 0.0), n


def aggregate(results: list[dict[str, Any]], metric: str | None = None) -> dict[RowKey, Row]:
    """Rows for one metric (the primary one of each result by default)."""
    rows: dict[RowKey, Row] = {}
    for r in sorted(results, key=lambda r: r["run"]["seed"]):
        key = (r["task"]["name"], protocol_label(r), r["run"]["profile"], r["method"]["name"], r["model"]["name"])
        row = rows.setdefault(key, Row(key, r["method"].get("kind", "transfer"), metric or r["scores"]["metric"]))
        row.seeds.append(r["run"]["seed"])
        # Schema 1 predates compared_with: a transfer method was compared with plain scratch.
        row.compared_with = r["method"].get("compared_with", "scratch" if row.kind == "transfer" else "")
        if r.get("report"):
            row.reports.append(r["report"])
        for lang, s in r["scores"]["per_language"].items():
            if row.metric in s:
                row.per_lang[lang].append(float(s[row.metric]))
        row.compute.append(r["compute"])
        row.flags.update(f"transductive: {x}" for x in r.get("flags", {}).get("transductive", []))
        if r.get("flags", {}).get("data_setting") == "shared":
            row.flags.add("shared-data")
        if r.get("flags", {}).get("xbench_reconstruction"):
            row.flags.add("xbench reconstruction")
        row.task_version = r["task"]["version"]
        row.data_hashes.add(r["task"].get("data_hash", ""))
        git = r["environment"].get("git", {})
        row.commits.add((git.get("commit") or "unknown")[:10] + ("+dirty" if git.get("dirty") else ""))
        row.xbench_versions.add(r.get("xbench_version", "?"))
    return rows
