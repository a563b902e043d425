"""Paired significance (xbench/results/significance.py) on synthetic predictions."""
import json
from pathlib import Path

import numpy as np
import pytest

from xbench.errors import XbenchError
from xbench.results.significance import UnitStats, load_unit, metric_of, paired_test, unit_stats


def _acc(correct: np.ndarray, ids=None) -> UnitStats:
    ids = tuple(str(i) for i in (range(len(correct)) if ids is None else ids))
    return UnitStats(ids, correct.astype(float).reshape(-1, 1), "mean")


def _sides(rng, n, p_method, p_base, seeds=(1,)):
    m = {"de": {s: _acc(rng.random(n) < p_method) for s in seeds}}
    b = {"de": {s: _acc(rng.random(n) < p_base) for s in seeds}}
    return m, b


def test_under_no_true_difference_the_interval_covers_zero_about_95_percent_of_the_time():
    # 300 simulations of two systems with the same accuracy: the binomial standard error of a 95%
    # coverage over 300 trials is 1.3 points, so [0.90, 0.99] is more than 3 standard errors wide
    # on either side; the percentile bootstrap under-covers slightly at n = 200, hence not tighter.
    rng = np.random.default_rng(7)
    covered = small_p = 0
    trials = 300
    for t in range(trials):
        m, b = _sides(rng, 200, 0.6, 0.6)
        d = paired_test(m, b, what="sim", resamples=400, seed=t)["de"]
        covered += d.low <= 0 <= d.high
        small_p += d.p_value < 0.05
    assert 0.90 <= covered / trials <= 0.99
    assert small_p / trials <= 0.10  # the permutation test's level is 5%


def test_a_large_true_difference_is_detected():
    m, b = _sides(np.random.default_rng(1), 300, 0.8, 0.5, seeds=(1, 2, 3))
    d = paired_test(m, b, what="sim")
    assert d["de"].significant and d["de"].low > 0.15 and d["de"].p_value < 0.01
    assert d["avg"].delta == pytest.approx(d["de"].delta)


def test_the_test_is_deterministic_for_a_fixed_seed_and_changes_with_it():
    m, b = _sides(np.random.default_rng(2), 150, 0.6, 0.55)
    one, two = paired_test(m, b, what="x", seed=3), paired_test(m, b, what="x", seed=3)
    assert one == two
    assert paired_test(m, b, what="x", seed=4)["de"].low != one["de"].low


def test_pairing_follows_example_ids_not_file_order():
    rng = np.random.default_rng(3)
    correct_m, correct_b = rng.random(100) < 0.7, rng.random(100) < 0.6
    perm = rng.permutation(100)
    m = {"de": {1: _acc(correct_m)}}
    b_in_order = {"de": {1: _acc(correct_b)}}
    b_shuffled = {"de": {1: _acc(correct_b[perm], ids=perm)}}
    assert paired_test(m, b_in_order, what="x") == paired_test(m, b_shuffled, what="x")


def test_misaligned_predictions_are_an_error():
    rng = np.random.default_rng(4)
    m = {"de": {1: _acc(rng.random(50) < 0.5), 2: _acc(rng.random(50) < 0.5)}}
    with pytest.raises(XbenchError, match=r"seed\(s\) \[2\] present for the method only"):
        paired_test(m, {"de": {1: _acc(rng.random(50) < 0.5)}}, what="x")
    other_ids = {"de": {1: _acc(rng.random(50) < 0.5, ids=range(1, 51)), 2: _acc(rng.random(50) < 0.5)}}
    with pytest.raises(XbenchError, match="other examples than the method's"):
        paired_test(m, other_ids, what="x")
    with pytest.raises(XbenchError, match="units differ"):
        paired_test(m, {"zh": m["de"]}, what="x")


def test_entity_f1_is_recomputed_from_summed_counts_as_seqeval_computes_it():
    from seqeval.metrics import f1_score

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"], ["B-LOC", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-ORG"], ["I-LOC", "O"]]  # I- after O opens an entity
    records = [{"index": i, "gold": g, "pred": p} for i, (g, p) in enumerate(zip(gold, pred))]
    st = unit_stats("token-labelling", "f1", records, "de", {}, "t")
    assert float(metric_of(st.values.sum(axis=0), 3, "f1")) == pytest.approx(f1_score(gold, pred))


def test_entity_precision_and_recall_are_recomputed_as_seqeval_computes_them():
    from seqeval.metrics import precision_score, recall_score

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"], ["B-LOC", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-ORG"], ["I-LOC", "O"]]
    records = [{"index": i, "gold": g, "pred": p} for i, (g, p) in enumerate(zip(gold, pred))]
    for metric, ref in (("precision", precision_score(gold, pred)), ("recall", recall_score(gold, pred))):
        st = unit_stats("token-labelling", metric, records, "de", {}, "t")
        assert st.kind == "ratio"
        assert float(metric_of(st.values.sum(axis=0), 3, st.kind)) == pytest.approx(ref)


def test_predictions_that_do_not_reproduce_the_recorded_score_are_refused(tmp_path: Path):
    path = tmp_path / "seed-1.json"
    preds = tmp_path / "seed-1.predictions"
    preds.mkdir()
    (preds / "de.jsonl").write_text("".join(json.dumps({"index": i, "gold": "a", "pred": "a" if i < 3 else "b"}) + "\n"
                                            for i in range(4)))
    result = {"_path": str(path), "task": {"type": "sentence-pair-classification"},
              "scores": {"per_language": {"de": {"accuracy": 0.75}}}}
    assert load_unit(result, "de", "accuracy").values.sum() == 3
    result["scores"]["per_language"]["de"]["accuracy"] = 0.5
    with pytest.raises(XbenchError, match="not the predictions behind this score"):
        load_unit(result, "de", "accuracy")
    with pytest.raises(XbenchError, match="no predictions for zh"):
        load_unit(result, "zh", "accuracy")


def _with_predictions(root: Path, method: str, kind: str, seed: int, correct: dict[str, np.ndarray]) -> None:
    from tests.fixtures_results import write_result

    path = write_result(root, method, kind, seed, {u: float(c.mean()) for u, c in correct.items()})
    folder = path.with_suffix("").with_name(path.stem + ".predictions")
    folder.mkdir()
    for unit, c in correct.items():
        (folder / f"{unit}.jsonl").write_text("".join(
            json.dumps({"index": i, "gold": "entailment", "pred": "entailment" if ok else "neutral"}) + "\n"
            for i, ok in enumerate(c)))


def test_the_leaderboard_shows_the_interval_and_marks_a_real_difference(tmp_path: Path):
    from xbench.results.leaderboard import build_tables, render_markdown
    from xbench.results.schema import iter_results

    rng = np.random.default_rng(5)
    for seed in (1, 2):
        _with_predictions(tmp_path, "clp", "transfer", seed, {u: rng.random(400) < 0.75 for u in ("de", "zh")})
        _with_predictions(tmp_path, "scratch", "baseline", seed, {u: rng.random(400) < 0.45 for u in ("de", "zh")})
    md = render_markdown("xnli", build_tables(iter_results(tmp_path), ["de", "zh"]), card_version=1)
    row = next(line for line in md.splitlines() if line.startswith("| clp |"))
    delta = row.split("|")[5].strip()
    assert delta.startswith("+") and "[" in delta and delta.endswith("*"), delta
    paired = next(line for line in md.splitlines() if line.startswith("| clp | scratch |"))
    assert paired.count("p<0.001 *") == 3  # de, zh and the average

    # Without the predictions the Δ stays, and the row says why there is no interval.
    for folder in tmp_path.rglob("seed-2.predictions"):
        for f in folder.iterdir():
            f.unlink()
    md = render_markdown("xnli", build_tables(iter_results(tmp_path), ["de", "zh"]), card_version=1)
    row = next(line for line in md.splitlines() if line.startswith("| clp |"))
    assert "[" not in row.split("|")[5] and "no paired test:" in row and "seed-2.predictions" in row
    # named from the results folder: a committed leaderboard shows no machine's absolute paths
    assert str(tmp_path) not in md


def test_parsing_statistics_reproduce_the_official_scorer(data_root, tmp_path):
    # Per-sentence counts must add up to what conll18_ud_eval reports for the whole file, for UAS, LAS
    # and CLAS alike, or a resample of sentences would test another metric than the leaderboard shows.
    from xbench.data.conllu_io import read_conllu, universal_deprel, write_conllu
    from xbench.metrics.ud import score_conllu

    gold_path = data_root / "ud" / "UD_German-GSD" / "de_gsd-ud-test.conllu.gz"
    sentences = read_conllu(gold_path)
    rng = np.random.default_rng(0)
    rels = ["nsubj", "obj", "det", "case", "punct", "amod", "root", "nmod"]
    heads, deprels, records = [], [], []
    for i, s in enumerate(sentences):
        gh, gr = s.heads, [universal_deprel(r) for r in s.deprels]
        # a tree either way (the scorer refuses cycles): the gold one, or a right-branching chain
        h = list(gh) if rng.random() < 0.5 else [k + 2 if k + 1 < len(s) else 0 for k in range(len(s))]
        r = [g if rng.random() < 0.7 else rels[int(rng.integers(len(rels)))] for g in gr]
        heads.append(h)
        deprels.append(r)
        records.append({"index": i, "heads": h, "deprels": r, "gold_heads": gh, "gold_deprels": gr})
    system = tmp_path / "system.conllu"
    write_conllu(sentences, heads, deprels, system)
    official = score_conllu(gold_path, system)
    for metric in ("uas", "las", "clas"):
        st = unit_stats("parsing", metric, records, "de", {}, "test")
        got = float(metric_of(st.values.sum(axis=0), len(st.ids), st.kind))
        assert got == pytest.approx(official[metric] / 100, abs=1e-9), metric
    old = [{k: v for k, v in r.items() if not k.startswith("gold_")} for r in records]
    with pytest.raises(XbenchError, match="without gold heads"):
        unit_stats("parsing", "las", old, "de", {}, "old.jsonl")
