"""Markdown leaderboards generated from result files alone (methods x languages)."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from xbench.results.aggregate import Row, Stat, aggregate, group_sets, split_model_label
from xbench.results.averages import LABELS
from xbench.results.chance import average_chance, near_chance, table_chance

BASELINE_ORDER = {"source": 0, "scratch": 1}


def _fmt(stat: Stat | None) -> str:
    if stat is None:
        return "–"
    # One seed has no spread to show; "± 0.0" would claim a measured zero.
    return f"{100 * stat.mean:.1f}" if stat.n == 1 else f"{100 * stat.mean:.1f} ± {100 * stat.std:.1f}"


def _human(x: float) -> str:
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def _device_label(d: Any) -> str | None:
    """`CPU`, `NVIDIA H200`, `NVIDIA H200 ×2` (processes) from a stage record's device."""
    if not isinstance(d, dict) or not d.get("type"):
        return None
    name = "CPU" if d["type"] == "cpu" else str(d.get("name") or d["type"])
    procs = d.get("processes")
    return f"{name} ×{procs}" if isinstance(procs, int) and procs > 1 else name


def _devices(row: Row, part: str) -> str:
    labels = {_device_label(s.get("device")) for c in row.compute for s in c.get(part) or [] if isinstance(s, dict)}
    return " / ".join(sorted(x for x in labels if x))


def _compute_cell(row: Row, part: str) -> str:
    totals = [c.get(f"{part}_total") for c in row.compute]
    labels = {t for t in totals if isinstance(t, str)}
    totals = [t for t in totals if isinstance(t, dict)]
    if not totals or not any(t["stages"] for t in totals):
        if part == "source_pretraining":
            return "–" if labels == {"unused"} else "external"
        return "0"
    flops = statistics.fmean(t["flops_est"] for t in totals)
    tokens = statistics.fmean(t["tokens_seen"] for t in totals)
    wall = statistics.fmean(t["wall_seconds"] for t in totals)
    device = _devices(row, part)
    return f"{_human(flops)}FLOP · {_human(tokens)} tok · {wall:.0f} s" + (f" · {device}" if device else "")


def _order(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r.kind == "baseline", BASELINE_ORDER.get(r.method, -1), r.method))


def build_tables(results: list[dict[str, Any]], lang_order: list[str],
                 average_excludes: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """One table per (task, protocol, profile, model, metric); rows are methods with baselines last.

    `average_excludes`: languages shown but left out of the averages (the card's, e.g. XQuAD's later
    ro), added to those the result files record (scores.average_excludes).
    """
    metrics: list[str] = []
    for r in results:
        for m in r["scores"].get("metrics", [r["scores"]["metric"]]):
            if m not in metrics:
                metrics.append(m)
    tables: list[dict[str, Any]] = []
    for metric in metrics:
        tables.extend(_tables_for_metric([r for r in results if metric in r["scores"].get("metrics", [r["scores"]["metric"]])],
                                         lang_order, metric, average_excludes))
    return tables


def _matched_baseline(row: Row, grp: list[Row]) -> Row | None:
    """The row a method's gain is measured against: its matched baseline (docs/methods/baselines.md),
    else plain scratch."""
    if row.kind == "baseline":
        return None
    # Rows of one table may differ in the source text of their model (model@hash): a baseline built
    # from the same text is the match, when there is one.
    candidates = [r for r in grp if r.method == (row.compared_with or "scratch")]
    same = [r for r in candidates if r.key[4] == row.key[4]]
    return (same or candidates or [None])[0]


def _paired(row: Row, base: Row, units: list[str], metric: str,
            by_path: dict[Any, dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
    """The paired test of a row against its baseline (results/significance.py), or why there is none."""
    from xbench.errors import XbenchError
    from xbench.results.significance import compare_results

    if any(p not in by_path for p in [*row.paths.values(), *base.paths.values()]):
        return None, None  # rows built from results not read from files: nothing to pair
    try:
        tests = compare_results({s: by_path[p] for s, p in row.paths.items()},
                                {s: by_path[p] for s, p in base.paths.items()}, units, metric,
                                what=f"{row.method} vs {base.method}")
    except XbenchError as exc:
        message = str(exc).splitlines()[0]
        for root in {str(r["_root"]) for r in by_path.values() if r.get("_root")}:
            message = message.replace(root.rstrip("/") + "/", "")
        return None, f"no paired test: {message}"
    return {u: t.to_dict() for u, t in tests.items()}, None


TRIVIAL_LABEL = {"accuracy": "majority class", "f1": "no entity"}


def _chance(grp: list[Row], langs: list[str], by_path: dict[Any, dict[str, Any]],
            metric: str) -> dict[str, tuple[float, int]]:
    """unit -> (chance level, examples) for the table's languages, from the first row that has the unit."""
    sources: dict[str, dict[str, Any]] = {}
    for row in grp:
        for unit in langs:
            for seed in sorted(row.per_lang.get(unit, {})):
                result = by_path.get(row.paths.get(seed))
                if result is not None and unit not in sources:
                    sources[unit] = result
    return table_chance(sources, metric)


def _tables_for_metric(results: list[dict[str, Any]], lang_order: list[str], metric: str,
                       average_excludes: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    from xbench.results.averages import parse_unit

    rows = aggregate(results, metric)
    by_path = {r.get("_path"): r for r in results}
    for row in rows.values():
        row.excludes.update(average_excludes)
    groups: dict[tuple[str, str, str, str], list[Row]] = {}
    for key, row in rows.items():
        task, protocol, profile, _method, model = key
        # One table per model name: a method that does not use the source model (meta) has no source-
        # text hash, yet belongs beside the rows it is compared with.
        groups.setdefault((task, protocol, profile, split_model_label(model)[0]), []).append(row)
    tables = []
    for (task, protocol, profile, model), grp in sorted(groups.items()):
        units = {u for r in grp for u in r.per_lang}
        # MLQA G-XLT cells ("c=de,q=en") go to a context x question matrix; the columns are languages.
        cells = sorted(u for u in units if parse_unit(u)[0] != parse_unit(u)[1])
        langs = [lang for lang in lang_order if lang in units]
        langs += sorted(units - set(langs) - set(cells))
        sets = group_sets(grp)
        card = "gxlt" if "gxlt" in sets else "xlt"
        left_out = [lang for lang in langs if lang not in sets.get("xlt", [])]
        avg_cols = [(name, LABELS[name] + (f" (without {', '.join(left_out)})" if name == "xlt" and left_out else ""))
                    for name in ("xlt", "gxlt") if name in sets]
        ordered = _order(grp)
        chance = _chance(grp, langs, by_path, metric)
        card_chance = average_chance(chance, sets.get(card, []))
        body = []
        for r in ordered:
            stats = {lang: r.stats(lang) for lang in langs}
            avgs = {name: r.average(sets[name]) for name, _ in avg_cols}
            avg = avgs.get(card)
            delta, base, paired, paired_note = None, _matched_baseline(r, grp), None, None
            if base is not None and avg is not None:
                b_avg = base.average(sets[card])
                delta = None if b_avg is None else avg.mean - b_avg.mean
                if delta is not None:
                    paired, paired_note = _paired(r, base, sets[card], metric, by_path)
            notes = [n for n in (r.average_note(sets[name], "avg" if len(avg_cols) == 1 else LABELS[name])
                                 for name, _ in avg_cols) if n]
            if paired_note:
                notes.append(paired_note)
            if avg is not None and card_chance is not None and near_chance(avg.mean, avg.std, *card_chance, metric):
                notes.append(f"near chance ({TRIVIAL_LABEL[metric]} {100 * card_chance[0]:.1f})")
            body.append({"row": r, "cells": stats, "avgs": avgs, "avg": avg, "delta": delta,
                         "delta_vs": base.method if base is not None else None, "paired": paired,
                         "flags": sorted(set(r.all_flags()) | set(notes))})
        best: dict[str, float] = {}
        for col in [*langs, *(name for name, _ in avg_cols)]:
            vals = [(b["avgs"].get(col) if col in LABELS else b["cells"][col]) for b in body]
            vals = [v.mean for v in vals if v is not None]
            if vals:
                best[col] = max(vals)
        matrices = [_gxlt_matrix(b, cells, parse_unit) for b in body if any(c in b["row"].per_lang for c in cells)]
        tables.append({"task": task, "protocol": protocol, "profile": profile, "model": model, "langs": langs,
                       "text_hashes": sorted({h for r in grp if (h := split_model_label(r.key[4])[1])}),
                       "avg_cols": avg_cols, "card": card, "avg_label": dict(avg_cols).get(card, "Avg"),
                       "body": body, "best": best, "metric": metric, "matrices": matrices,
                       "avg_units": {name: sets[name] for name, _ in avg_cols},
                       "chance": {u: c for u, (c, _) in chance.items()},
                       "chance_avgs": {name: a[0] for name, _ in avg_cols
                                       if (a := average_chance(chance, sets[name])) is not None},
                       "reports": [(r, r.reports) for r in ordered if r.reports]})
    return tables


def _gxlt_matrix(b: dict[str, Any], cells: list[str], parse_unit: Any) -> dict[str, Any]:
    """Context x question grid of one row: off-diagonal cells from G-XLT units, the diagonal from XLT."""
    row: Row = b["row"]
    contexts = sorted({parse_unit(c)[0] for c in cells if c in row.per_lang})
    # Question languages: those of the off-diagonal cells, and a context language where its own
    # (diagonal, XLT) cell was scored too.
    langs = sorted({parse_unit(c)[1] for c in cells if c in row.per_lang} | {c for c in contexts if c in row.per_lang})
    grid = {(c, q): row.stats(c if c == q else f"c={c},q={q}") for c in contexts for q in langs}
    return {"row": row, "contexts": contexts, "questions": langs, "grid": grid, "gxlt_mean": b["avgs"].get("gxlt")}


def _cell(stat: Stat | None, best: float | None) -> str:
    text = _fmt(stat)
    return f"**{text}**" if stat is not None and best is not None and abs(stat.mean - best) < 1e-12 else text


def render_markdown(task: str, tables: list[dict[str, Any]], card_version: int | None = None) -> str:
    lines = [f"# Leaderboard: {task}", "",
             "Generated by `xbench leaderboard` from result files alone; do not edit by hand.", "",
             "Cells are mean ± std over seeds (×100, one decimal; a value from one seed stands alone, `Seeds` "
             "lists them); the best value of each column is bold. `Eval split` is the split scored (dev or test). "
             "`XLT mean` is the macro average over the target-language columns (context and question in one "
             "language), without the card's later additions where named; MLQA G-XLT tables add the `G-XLT mean` "
             "over the off-diagonal context ≠ question cells (the MLQA paper's definition). An average is taken "
             "per seed over the seeds that have every language, `–` when none has; a flag says which seeds "
             "where some lack one. "
             "`Δ vs scratch` compares the card average (the G-XLT mean where there is one, else the XLT mean) "
             "with the method's matched scratch baseline in the same table "
             "(named when it is not plain `scratch`: `scratch-clp` has CLP's tokenizer, data and tokens, "
             "`meta-single` is meta-pretraining's single-phase run), with its 95% interval from a paired "
             "bootstrap over the test examples and seeds, `*` where the interval excludes 0; the table below "
             "each leaderboard gives the interval and a paired permutation p-value per language "
             "(xbench/results/significance.py). The *chance* row is the score of a trivial predictor (the "
             "test set's majority class for accuracy, no entity for NER F1; xbench/results/chance.py), and "
             "`near chance` flags a row whose average is within noise of it. "
             "Compute is the mean per seed, summed over the row's encoders (a per-language method builds one "
             "per language): estimated FLOPs (6 × non-embedding parameters × tokens), training tokens and "
             "wall seconds, and the device they ran on. Source pretraining is the source model's own cost when "
             "xbench built it, `external` for a public checkpoint, `–` when the row uses no source weights. "
             "`transductive: <task> (<languages>)` marks a row whose encoder was pretrained on text of the "
             "evaluation data of this task in those languages.", ""]
    footer_rows: list[Row] = []
    for t in tables:
        hashes = t["text_hashes"]
        built = f" (built from source text {', '.join(hashes)})" if hashes else ""
        lines.append(f"## {t['protocol']} · profile {t['profile']} · model `{t['model']}`{built} · metric {t['metric']}")
        lines.append("")
        head = ["Method", *t["langs"], *(label for _, label in t["avg_cols"]), "Δ vs scratch", "Transfer compute",
                "Source pretraining", "Eval split", "Seeds", "Flags"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(t["langs"]) + len(t["avg_cols"]) + 1) + ["---"] * 5) + "|")
        for b in t["body"]:
            r: Row = b["row"]
            footer_rows.append(r)
            name = f"{r.method} (baseline)" if r.kind == "baseline" else r.method
            text_hash = split_model_label(r.key[4])[1]
            if len(hashes) > 1 and text_hash:  # rows whose source models learnt from different text
                name += f" @{text_hash}"
            delta = _delta(b)
            cells = [_cell(b["cells"][lang], t["best"].get(lang)) for lang in t["langs"]]
            avgs = [_cell(b["avgs"][n], t["best"].get(n)) for n, _ in t["avg_cols"]]
            # A warning may quote a predicted answer, which may hold a `|` that would split the table cell.
            lines.append("| " + " | ".join([name, *cells, *avgs, delta,
                                             _compute_cell(r, "transfer"), _compute_cell(r, "source_pretraining"),
                                             ",".join(sorted(r.eval_splits)), ",".join(map(str, r.seeds)),
                                             ", ".join(b["flags"]).replace("|", "\\|")]) + " |")
        if t["chance"]:
            kind = TRIVIAL_LABEL.get(t["metric"], "trivial predictor")
            cells = [f"{100 * t['chance'][lang]:.1f}" if lang in t["chance"] else "–" for lang in t["langs"]]
            avgs = [f"{100 * t['chance_avgs'][n]:.1f}" if n in t["chance_avgs"] else "–" for n, _ in t["avg_cols"]]
            lines.append("| " + " | ".join([f"*chance: {kind}*", *cells, *avgs, *["–"] * 6]) + " |")
        lines.append("")
        lines += _paired_markdown(t)
        for m in t["matrices"]:
            lines += _matrix_markdown(m)
        if t["reports"]:
            lines += _reports_markdown(t["reports"])
    versions = sorted({v for r in footer_rows for v in r.xbench_versions})
    commits = sorted({c for r in footer_rows for c in r.commits})
    hashes = sorted({h[:12] for r in footer_rows for h in r.data_hashes if h})
    lines += ["---", "",
              f"Task version {card_version if card_version is not None else '?'} · data hash {', '.join(hashes) or '?'} · "
              f"xbench {', '.join(versions)} · commit {', '.join(commits)} · generated {time.strftime('%Y-%m-%d')}", ""]
    return "\n".join(lines)


def _delta(b: dict[str, Any]) -> str:
    if b["delta"] is None:
        return "–"
    vs = "" if b["delta_vs"] == "scratch" else f" vs {b['delta_vs']}"
    paired = (b.get("paired") or {}).get("avg")
    if paired is None:
        return f"{100 * b['delta']:+.1f}{vs}"
    lo, hi = paired["ci95"]
    mark = " *" if paired["significant"] else ""
    return f"{100 * b['delta']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]{mark}{vs}"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _paired_markdown(t: dict[str, Any]) -> list[str]:
    """Per language and on the card average: Δ, 95% interval and p-value of each row's paired test."""
    tested = [b for b in t["body"] if b.get("paired")]
    if not tested:
        return []
    units = [u for u in [*t["langs"], "avg"] if any(u in b["paired"] for b in tested)]
    lines = ["Paired tests against the matched baseline (Δ ×100 [95% paired-bootstrap interval], permutation "
             "p-value; `*`: the interval excludes 0; `avg` is the card average):", "",
             "| Method | vs | " + " | ".join(units) + " |", "|---|---|" + "---:|" * len(units)]
    for b in tested:
        cells = []
        for u in units:
            d = b["paired"].get(u)
            cells.append("–" if d is None else f"{100 * d['delta']:+.1f} [{100 * d['ci95'][0]:+.1f}, "
                         f"{100 * d['ci95'][1]:+.1f}] {_p(d['p_value'])}{' *' if d['significant'] else ''}")
        lines.append(f"| {b['row'].method} | {b['delta_vs']} | " + " | ".join(cells) + " |")
    return lines + [""]


def _matrix_markdown(m: dict[str, Any]) -> list[str]:
    r: Row = m["row"]
    lines = [f"G-XLT matrix of `{r.method}`: rows are context languages, columns question languages; the "
             f"diagonal is XLT. G-XLT mean (off-diagonal): {_fmt(m['gxlt_mean'])}.", "",
             "| context \\ question | " + " | ".join(m["questions"]) + " |",
             "|---|" + "---:|" * len(m["questions"])]
    for c in m["contexts"]:
        lines.append(f"| {c} | " + " | ".join(_fmt(m["grid"][(c, q)]) for q in m["questions"]) + " |")
    return lines + [""]


REPORT_FIELDS = (("english", "English (selection split)"), ("target_mean", "target mean"),
                 ("transfer_gap", "transfer gap"))


def _mean_std(vals: list[float]) -> Stat | None:
    if not vals:
        return None
    return Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals), ())


def _reports_markdown(reports: list[tuple[Row, list[dict[str, Any]]]]) -> list[str]:
    """The three quantities of docs/methods/meta.md, "Transfer report", for rows whose results carry one, and
    Tatoeba retrieval after (and, where the encoder measured it, before) the method's training."""
    langs = sorted({lang for _, reps in reports for rep in reps for lang in rep.get("retrieval", {})})
    before = sorted({lang for _, reps in reports for rep in reps for lang in rep.get("retrieval_before", {})})
    head = ["Method", *[label for _, label in REPORT_FIELDS], *[f"retrieval {lang} before" for lang in before],
            *[f"retrieval {lang}" for lang in langs]]
    lines = ["Transfer report (docs/methods/meta.md): generalisation (English score of the kept checkpoint), "
             "zero-shot target mean, transfer gap = English − target mean, and Tatoeba retrieval accuracy "
             "(mean of xx→en and en→xx, mean-pooled middle layer, cosine)"
             + ("; \"before\" is the source model's, measured by the method before its training." if before else "."),
             "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r, reps in reports:
        cells = [_fmt(_mean_std([rep[k] for rep in reps if rep.get(k) is not None])) for k, _ in REPORT_FIELDS]
        for field_name, field_langs in (("retrieval_before", before), ("retrieval", langs)):
            cells += [_fmt(_mean_std([rep[field_name][lang]["mean"] for rep in reps
                                      if lang in rep.get(field_name, {})])) for lang in field_langs]
        lines.append(f"| {r.method} | " + " | ".join(cells) + " |")
    return lines + [""]


def rich_tables(tables: list[dict[str, Any]]) -> list[Any]:
    from rich.table import Table

    out = []
    for t in tables:
        table = Table(title=f"{t['task']} · {t['protocol']} · {t['profile']} · {t['model']} ({t['metric']} ×100)")
        for col in ["Method", *t["langs"], *(label for _, label in t["avg_cols"]), "Δ vs scratch", "Transfer compute",
                    "Split", "Seeds"]:
            table.add_column(col, justify="left" if col in ("Method", "Transfer compute", "Split", "Seeds") else "right")
        for b in t["body"]:
            r = b["row"]
            cells = []
            for col in [*t["langs"], *(n for n, _ in t["avg_cols"])]:
                stat = b["avgs"][col] if col in LABELS else b["cells"][col]
                text = _fmt(stat)
                best = t["best"].get(col)
                cells.append(f"[bold]{text}[/bold]" if stat and best is not None and abs(stat.mean - best) < 1e-12 else text)
            delta = _delta(b)
            table.add_row(r.method + (" (baseline)" if r.kind == "baseline" else ""), *cells, delta,
                          _compute_cell(r, "transfer"), ",".join(sorted(r.eval_splits)), ",".join(map(str, r.seeds)))
        out.append(table)
    return out


def write_leaderboards(results_dir: Path, out_dir: Path, task: str | None = None) -> list[tuple[Path, list[dict[str, Any]]]]:
    from xbench.cards import all_cards
    from xbench.errors import XbenchError
    from xbench.results.export import write_exports
    from xbench.results.schema import iter_results, path_component_problem

    cards = all_cards()
    results = iter_results(results_dir, task)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_task.setdefault(r["task"]["name"], []).append(r)
    written = []
    from xbench.atomic import atomic_write_text

    for name in by_task:  # load_result refuses these too; checked again because each names a file written here
        problem = path_component_problem("task name", name)
        if problem:
            raise XbenchError(f"{by_task[name][0].get('_path', 'a result')}: field 'task.name': {problem}")
    for name, rs in sorted(by_task.items()):
        card = cards.get(name)
        order = list(card.languages) if card else sorted({lang for r in rs for lang in r["scores"]["per_language"]})
        tables = build_tables(rs, order, tuple(card.raw.get("average_excludes", ())) if card else ())
        path = Path(out_dir) / f"{name}.md"
        atomic_write_text(path, render_markdown(name, tables, card.version if card else None))
        write_exports(Path(out_dir), name, tables)  # <task>.csv and <task>-compute.png beside it
        written.append((path, tables))
    return written
