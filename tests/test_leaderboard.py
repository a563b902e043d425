from __future__ import annotations

from tests.fixtures_results import write_result
from xbench.results.leaderboard import build_tables, render_markdown
from xbench.results.schema import iter_results


def _lines(md: str, start: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(start))


def test_markdown_cells_ordering_bold_delta_and_missing(tmp_path):
    for seed, (de, zh) in zip([1, 2, 3], [(0.40, 0.35), (0.42, 0.37), (0.44, 0.39)]):
        write_result(tmp_path, "clp", "transfer", seed, {"de": de, "zh": zh}, flops=2e12, tokens=1_000_000)
    for seed, (de, zh) in zip([1, 2, 3], [(0.36, 0.34), (0.36, 0.34), (0.36, 0.34)]):
        write_result(tmp_path, "scratch", "baseline", seed, {"de": de, "zh": zh}, flops=1e12, tokens=1_000_000)
    write_result(tmp_path, "source", "baseline", 1, {"de": 0.38})  # zh missing
    tables = build_tables(iter_results(tmp_path), ["en", "de", "zh"])
    md = render_markdown("xnli", tables, card_version=1)
    header = _lines(md, "| Method")
    assert header.split("|")[2].strip() == "de" and header.split("|")[3].strip() == "zh"
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| Method")]
    assert [r.split("|")[1].strip() for r in rows] == ["clp", "source (baseline)", "scratch (baseline)"]
    clp = rows[0].split("|")
    # mean of 0.40, 0.42, 0.44 = 42.0, sample std = 2.0; bold as the best of its column
    assert clp[2].strip() == "**42.0 ± 2.0**"
    assert clp[4].strip() == "**39.5 ± 2.0**"  # Avg over de, zh per seed: 37.5, 39.5, 41.5
    assert clp[5].strip() == "+4.5"  # vs scratch avg 35.0
    assert "2.0TFLOP" in clp[6] and "1.0M tok" in clp[6]
    assert clp[7].strip() == "external" and rows[2].split("|")[7].strip() == "–"  # scratch uses no source weights
    source = rows[1].split("|")
    assert source[3].strip() == "–" and source[4].strip() == "–"  # missing zh: no average
    assert "Task version 1" in md and "abc123def456" in md and "1234567890" in md


def test_rich_tables_render(tmp_path):
    from rich.console import Console

    from xbench.results.leaderboard import rich_tables

    write_result(tmp_path, "scratch", "baseline", 1, {"de": 0.5})
    console = Console(record=True, width=200)
    for t in rich_tables(build_tables(iter_results(tmp_path), ["de"])):
        console.print(t)
    assert "50.0 ± 0.0" in console.export_text()
