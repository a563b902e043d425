from __future__ import annotations

import pytest

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
    text = console.export_text()
    assert "50.0" in text and "± 0.0" not in text  # one seed: the value alone


def _row(md: str, name: str) -> list[str]:
    return [c.strip() for c in _lines(md, f"| {name} |").split("|")[1:-1]]


def test_gain_is_measured_against_the_matched_baseline(tmp_path):
    write_result(tmp_path, "clp", "transfer", 1, {"de": 0.45}, compared_with="scratch-clp")
    write_result(tmp_path, "scratch-clp", "baseline", 1, {"de": 0.40})
    write_result(tmp_path, "scratch", "baseline", 1, {"de": 0.30})
    write_result(tmp_path, "meta", "transfer", 1, {"de": 0.38}, compared_with="meta-single")  # baseline absent
    write_result(tmp_path, "old", "transfer", 1, {"de": 0.35})  # schema 1: no compared_with, plain scratch
    md = render_markdown("xnli", build_tables(iter_results(tmp_path), ["de"]), card_version=1)
    assert _row(md, "clp")[3] == "+5.0 vs scratch-clp"
    assert _row(md, "meta")[3] == "–"
    assert _row(md, "old")[3] == "+5.0"
    assert _row(md, "scratch-clp (baseline)")[3] == "–"


def test_gxlt_cells_form_a_context_by_question_matrix(tmp_path):
    write_result(tmp_path, "source", "baseline", 1,
                 {"de": 0.50, "en": 0.70, "c=de,q=en": 0.40, "c=en,q=de": 0.30}, task="mlqa")
    write_result(tmp_path, "source", "baseline", 2,
                 {"de": 0.52, "en": 0.70, "c=de,q=en": 0.42, "c=en,q=de": 0.32}, task="mlqa")
    md = render_markdown("mlqa", build_tables(iter_results(tmp_path), ["en", "de"]), card_version=1)
    header = _lines(md, "| Method").split("|")
    assert [c.strip() for c in header[2:6]] == ["en", "de", "XLT mean", "G-XLT mean"]  # XLT columns only
    assert "c=de,q=en" not in _lines(md, "| Method")
    assert "G-XLT mean (off-diagonal): 36.0 ± 1.4" in md  # per seed (40+30)/2, (42+32)/2
    assert _lines(md, "| context").split("|")[2:4] == [" de ", " en "]
    assert _row(md, "de") == ["de", "51.0 ± 1.4", "41.0 ± 1.4"]
    assert _row(md, "en") == ["en", "31.0 ± 1.4", "70.0 ± 0.0"]


def test_transfer_report_table(tmp_path):
    for seed, (en, gap, ret) in zip([1, 2], [(0.50, 0.10, 0.20), (0.54, 0.12, 0.30)]):
        report = {"english": en, "target_mean": en - gap, "transfer_gap": gap,
                  "retrieval": {"de": {"xx_to_en": ret, "en_to_xx": ret, "mean": ret}}}
        write_result(tmp_path, "meta", "transfer", seed, {"de": en - gap}, compared_with="meta-single", report=report)
    md = render_markdown("xnli", build_tables(iter_results(tmp_path), ["de"]), card_version=1)
    report_part = md[md.index("Transfer report"):]
    assert _row(report_part, "meta") == ["meta", "52.0 ± 2.8", "41.0 ± 1.4", "11.0 ± 1.4", "25.0 ± 7.1"]


def test_transfer_report_shows_retrieval_before_the_method_where_measured(tmp_path):
    for seed, (before, after) in zip([1, 2], [(0.10, 0.20), (0.10, 0.30)]):
        report = {"english": 0.5, "target_mean": 0.4, "transfer_gap": 0.1,
                  "retrieval": {"de": {"xx_to_en": after, "en_to_xx": after, "mean": after}},
                  "retrieval_before": {"de": {"xx_to_en": before, "en_to_xx": before, "mean": before}}}
        write_result(tmp_path, "ppa", "transfer", seed, {"de": 0.4}, compared_with="mlm-control", report=report)
    md = render_markdown("xnli", build_tables(iter_results(tmp_path), ["de"]), card_version=1)
    report_part = md[md.index("Transfer report"):]
    assert "| Method | English (selection split) | target mean | transfer gap | retrieval de before | retrieval de |" in report_part
    assert _row(report_part, "ppa")[-2:] == ["10.0 ± 0.0", "25.0 ± 7.1"]


def test_a_code_switched_training_set_flags_the_row(tmp_path):
    import json

    path = write_result(tmp_path, "ppa", "transfer", 1, {"de": 0.4}, compared_with="mlm-control")
    result = json.loads(path.read_text())
    result["task"]["data"] = {"de/dev-train": {"source": "local", "selection": {
        "split": "dev", "code_switch": {"originals": "en/dev-train", "p_switch": 0.5, "seed": 1}}}}
    path.write_text(json.dumps(result))
    write_result(tmp_path, "source", "baseline", 1, {"de": 0.4})
    md = render_markdown("xnli", build_tables(iter_results(tmp_path), ["de"]), card_version=1)
    assert "code-switched training (p_switch 0.5, originals en/dev-train)" in _lines(md, "| ppa |")
    assert "code-switched" not in _lines(md, "| source")


def test_task_option_variants_are_separate_results_and_tables(tmp_path):
    plain = write_result(tmp_path, "source", "baseline", 1, {"de": 0.50}, task="ud")
    pud = write_result(tmp_path, "source", "baseline", 1, {"de_pud": 0.40}, task="ud", variant="treebank=pud")
    assert plain != pud and pud.parts[-5] == "zero-shot+treebank=pud"
    tables = build_tables(iter_results(tmp_path), ["de"])
    assert sorted(t["protocol"] for t in tables) == ["zero-shot", "zero-shot (treebank=pud)"]
    assert all(len(b["row"].seeds) == 1 for t in tables for b in t["body"])  # never counted as two seeds


def test_card_average_excludes_a_later_language(tmp_path):
    write_result(tmp_path, "source", "baseline", 1, {"de": 0.40, "zh": 0.20, "ro": 0.90}, task="xquad")
    md = render_markdown("xquad", build_tables(iter_results(tmp_path), ["de", "zh", "ro"], ("ro",)), card_version=1)
    assert "XLT mean (without ro)" in _lines(md, "| Method")
    assert _row(md, "source (baseline)")[4] == "**30.0**"


def test_gxlt_matrix_columns_are_the_question_languages(tmp_path):
    # --langs de,zh --question-langs en,de: zh contexts have no zh question, so there is no zh column.
    write_result(tmp_path, "source", "baseline", 1, {"de": 0.5, "c=de,q=en": 0.4, "c=zh,q=en": 0.3, "c=zh,q=de": 0.2},
                 task="mlqa")
    md = render_markdown("mlqa", build_tables(iter_results(tmp_path), ["en", "de", "zh"]), card_version=1)
    assert [c.strip() for c in _lines(md, "| context").split("|")[2:-1]] == ["de", "en"]
    assert _row(md, "zh") == ["zh", "20.0", "30.0"]


# --------------------------------------------------------------------------- flags and labels (issue 9, A.9)

def test_transductive_flag_only_on_rows_of_the_task_whose_data_was_seen(tmp_path):
    write_result(tmp_path, "source", "baseline", 1, {"de": 0.5}, task="xnli", transductive=("xquad",))  # schema 2 style
    write_result(tmp_path, "source", "baseline", 1, {"en": 0.6, "de": 0.4}, task="xquad", transductive=("xquad:en",))
    by_task = {t["task"]: t for t in build_tables(iter_results(tmp_path), ["en", "de"])}
    xnli = render_markdown("xnli", [by_task["xnli"]], card_version=1)
    xquad = render_markdown("xquad", [by_task["xquad"]], card_version=1)
    assert "transductive" not in _row(xnli, "source (baseline)")[-1]
    assert "transductive: xquad (en)" in _row(xquad, "source (baseline)")[-1]


def test_transductive_entries_are_kept_for_the_task_and_languages_evaluated():
    from xbench.results.transductive import for_result, pool_entries

    entries = pool_entries({"lang": "en", "transductive": ["xquad"]}) + pool_entries({"lang": "ko", "transductive": ["tydiqa"]})
    assert entries == ["xquad:en", "tydiqa:ko"]
    assert for_result(entries, "xquad", ["en", "de"]) == ["xquad:en"]
    assert for_result(entries, "xquad", ["de"]) == []
    assert for_result(entries, "xnli", ["en"]) == []
    assert for_result(entries, "tydiqa", ["ko", "sw"]) == ["tydiqa:ko"]


def test_source_encoder_carries_its_pools_transductive_sources(monkeypatch):
    import xbench.methods.source as source
    from xbench.models.source_models import SourceModel
    from xbench.methods.base import RunContext

    pool = {"lang": "en", "transductive": ["xquad"]}
    monkeypatch.setattr(source, "resolve_source_model",
                        lambda name, data_dir=None: SourceModel(name, "/nowhere", manifest={"pool": pool}))
    enc = source.SourceMethod(RunContext(profile={"name": "smoke"}, model="xbench/tiny-en-bert", data_dir=None,
                                         params={})).build_encoder(None)
    assert enc.flags["transductive"] == ["xquad:en"]


def test_tiny_source_models_pool_holds_the_xquad_english_contexts(data_root):
    from xbench.data.pools import build_pool
    from xbench.results.transductive import pool_entries

    if not (data_root / "xquad" / "xquad.en.json").is_file():
        pytest.skip("no XQuAD English file in the data root")
    assert "xquad:en" in pool_entries(build_pool("en", data_root).manifest())


def test_rows_show_eval_split_device_and_single_seed_values(tmp_path):
    h200 = {"type": "cuda", "name": "NVIDIA H200", "count": 1, "processes": 2}
    write_result(tmp_path, "clp", "transfer", 1, {"de": 0.42}, eval_split="dev", device=h200, flops=2e12, tokens=10**6)
    write_result(tmp_path, "scratch", "baseline", 1, {"de": 0.36}, eval_split="dev",
                 warnings=("de: 80% [UNK] tokens",))
    md = render_markdown("panx", build_tables(iter_results(tmp_path), ["de"]), card_version=1)
    head = [c.strip() for c in _lines(md, "| Method").split("|")[1:-1]]
    clp, scratch = _row(md, "clp"), _row(md, "scratch (baseline)")
    assert clp[head.index("Eval split")] == "dev" and scratch[head.index("Eval split")] == "dev"
    assert clp[head.index("Transfer compute")].endswith("· NVIDIA H200 ×2")
    assert clp[head.index("de")] == "**42.0**" and "± 0.0" not in md  # one seed: no spread to show
    assert "warning: de: 80% [UNK] tokens" in scratch[head.index("Flags")]


# --------------------------------------------------------------------------- path escapes (issue 9, B.12)

def test_a_task_name_that_escapes_the_output_folder_is_refused(tmp_path):
    import json

    from xbench.errors import DataFormatError
    from xbench.results.leaderboard import write_leaderboards

    path = write_result(tmp_path / "results", "source", "baseline", 1, {"de": 0.5})
    data = json.loads(path.read_text())
    data["task"]["name"] = "../../x/ESCAPED"
    path.write_text(json.dumps(data))
    out = tmp_path / "deep" / "er" / "boards"
    with pytest.raises(DataFormatError, match="field 'task.name'") as exc:
        write_leaderboards(tmp_path / "results", out)
    assert str(path) in str(exc.value)
    assert not list(tmp_path.rglob("ESCAPED*")) and not out.exists()


def test_a_warning_quoting_a_pipe_stays_in_its_cell(tmp_path):
    write_result(tmp_path, "source", "baseline", 1, {"de": 0.1}, warnings=("de: 60% of the answers are 'a | b'",))
    md = render_markdown("xquad", build_tables(iter_results(tmp_path), ["de"]), card_version=1)
    line = _lines(md, "| source")
    assert line.count(" | ") == _lines(md, "| Method").count(" | ")


def test_warnings_are_gathered_by_kind_and_language_over_seeds(tmp_path):
    # Each seed words its warning with its own share and label; the row says once which languages
    # warned of what, and in which seeds, instead of one sentence per seed.
    one = "{u}: one class predicted: {p}% of the predictions are 'neutral', 33% in the gold (over 90% of 3 classes)"
    unk = "zh: [UNK] rate over 20%: 93% of the input subwords are [UNK]"
    write_result(tmp_path, "source", "baseline", 1, {"de": 0.33, "zh": 0.33},
                 warnings=(one.format(u="de", p=100), one.format(u="zh", p=95), unk))
    write_result(tmp_path, "source", "baseline", 2, {"de": 0.34, "zh": 0.33}, warnings=(one.format(u="de", p=97), unk))
    from xbench.results.aggregate import aggregate

    flags = next(iter(aggregate(iter_results(tmp_path)).values())).all_flags()
    assert "warning: one class predicted: de (every seed), zh (seed 1)" in flags
    assert "warning: [UNK] rate over 20%: zh (every seed)" in flags
    assert not any("% of the predictions" in f for f in flags)


def test_rows_of_one_model_share_a_table_whatever_their_source_text(tmp_path):
    # meta does not use the source model (no source-text hash) and belongs beside the rows built from
    # tiny-en-bert; two source models built from different text are two rows, named by their text.
    import json

    from xbench.results.aggregate import aggregate

    paths = {("source", "a"): write_result(tmp_path / "a", "source", "baseline", 1, {"de": 0.40}),
             ("source", "b"): write_result(tmp_path / "b", "source", "baseline", 1, {"de": 0.30}),
             ("meta", None): write_result(tmp_path / "c", "meta", "transfer", 1, {"de": 0.35})}
    for (method, text), path in paths.items():
        if text:
            data = json.loads(path.read_text())
            data["model"]["source_text_hash"] = text * 64
            path.write_text(json.dumps(data))
    results = [r for d in ("a", "b", "c") for r in iter_results(tmp_path / d)]
    assert len(aggregate(results)) == 3
    tables = build_tables(results, ["de"])
    assert len(tables) == 1 and tables[0]["text_hashes"] == ["a" * 8, "b" * 8]
    text = render_markdown("xnli", tables, card_version=1)
    assert f"| source (baseline) @{'a' * 8} |" in text and f"| source (baseline) @{'b' * 8} |" in text
    assert "| meta |" in text
