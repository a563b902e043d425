"""Paired significance of a method's difference from its matched baseline, from result files alone.

Input: the per-example predictions every result file stores beside it (`seed-<n>.predictions/<unit>.jsonl`),
for the same task, units and seeds on both sides. Per example, each task type's metric is reduced to
*additive* statistics from which the metric is recomputed on any resample of the examples:

- accuracy (sentence-pair classification): [correct];            metric = Σ correct / n
- EM / F1 (extractive QA): [em, f1] per question, with the card's normalisation scheme in the
  unit's context language (xbench.metrics.qa);                    metric = Σ value / n
- entity F1 (NER, seqeval default mode): [tp, predicted, gold] entity counts per sentence;
                                                                  metric = 2 Σ tp / (Σ predicted + Σ gold)

- UAS / LAS (parsing, gold tokenisation, where the CoNLL 2018 F1 is an accuracy over words): [correct, words]
  per sentence;                                                   metric = Σ correct / Σ words
- CLAS: [correct, predicted content words, gold content words] per sentence, content relations as in the
  CoNLL 2018 scorer (udtools.udeval.CONTENT_DEPRELS);             metric = 2 Σ correct / (Σ predicted + Σ gold)

so entity-level micro F1 (and UAS, LAS, CLAS) is recomputed from the resampled sentences' counts, never
averaged per sentence.
Before any test, the metric of the whole unit is recomputed from these statistics and compared with the
score the result file records: predictions that do not reproduce the score are an error, not a test.

Two tests, both paired by example (the same examples and seeds on both sides; anything else is an error):

- **95% confidence interval**: paired bootstrap. One resample draws n examples with replacement; the
  same draw is applied to both systems and to every seed pairing, and the difference is the mean over
  seeds of (method − baseline). The interval is the 2.5th and 97.5th percentile of B resampled
  differences (percentile bootstrap, B = 2,000 by default).
- **p-value**: paired approximate randomisation (a permutation test): under the null hypothesis the two
  systems' outputs on an example are exchangeable, so each resample swaps them on a random half of the
  examples (in every seed alike); p = (1 + #{|Δ_r| ≥ |Δ|}) / (R + 1).

The macro average over units (the card average) resamples every unit independently and averages the
units' differences, so its interval and p-value use the same draws as the per-unit ones. Draws come
from a generator seeded by `seed`, so the same files give the same interval and p-value.
Why not `scipy.stats.bootstrap` / `permutation_test`: the statistic is a ratio of sums paired across
seeds and averaged across units; scipy would need an index-array workaround that materialises
resample × example arrays, where a multinomial count matrix times the statistics does the same in a
few lines.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbench.errors import XbenchError

N_RESAMPLES = 2000
CHUNK = 250  # resamples per matrix product: bounds memory at CHUNK x n counts


@dataclass(frozen=True)
class UnitStats:
    """One unit of one seed: example ids in file order and their additive statistics (n x k)."""

    ids: tuple[str, ...]
    values: Any  # numpy array, n x k
    kind: str  # "mean" (column 0 is the metric per example) or "f1" (tp, predicted, gold)


@dataclass(frozen=True)
class PairedDelta:
    """Method minus baseline: the observed difference, its 95% interval, p-value and what it rests on."""

    delta: float
    low: float
    high: float
    p_value: float
    n_examples: int
    seeds: tuple[int, ...]

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return {"delta": self.delta, "ci95": [self.low, self.high], "p_value": self.p_value,
                "n_examples": self.n_examples, "seeds": list(self.seeds), "significant": self.significant}


def metric_of(sums: Any, n: int, kind: str) -> Any:
    """The metric from column sums (shape ... x k), vectorised over leading axes."""
    import numpy as np

    if kind == "mean":
        return sums[..., 0] / n
    if kind == "ratio":
        return np.divide(sums[..., 0], sums[..., 1], out=np.zeros_like(sums[..., 1], dtype=float),
                         where=sums[..., 1] > 0)
    denom = sums[..., 1] + sums[..., 2]
    return np.divide(2.0 * sums[..., 0], denom, out=np.zeros_like(denom, dtype=float), where=denom > 0)


def unit_stats(task_type: str, metric: str, records: Sequence[Mapping[str, Any]], unit: str,
               scoring: Mapping[str, Any], where: str) -> UnitStats:
    """The additive per-example statistics of one unit's prediction records (see the module docstring)."""
    import numpy as np

    if not records:
        raise XbenchError(f"{where}: no predictions")
    if task_type == "sentence-pair-classification" and metric == "accuracy":
        ids = tuple(str(r["index"]) for r in records)
        vals = np.array([[float(r["pred"] == r["gold"])] for r in records])
        return UnitStats(ids, vals, "mean")
    if task_type == "extractive-qa" and metric in ("f1", "exact_match"):
        from xbench.metrics import qa
        from xbench.results.averages import parse_unit

        lang, scheme = parse_unit(unit)[0], scoring.get("scheme", "mlqa")
        fn = qa.f1 if metric == "f1" else qa.exact_match
        rows = []
        for r in records:
            golds = [g for g in r["gold"] if g.strip()]
            if not golds:
                raise XbenchError(f"{where}: question '{r['id']}' has no non-empty gold answer")
            rows.append([fn(r["pred"], golds, lang, scheme)])
        return UnitStats(tuple(str(r["id"]) for r in records), np.array(rows), "mean")
    if task_type == "token-labelling" and metric in ("f1", "precision", "recall"):
        from seqeval.metrics.sequence_labeling import get_entities

        rows = []
        for r in records:
            gold, pred = set(get_entities(list(r["gold"]))), set(get_entities(list(r["pred"])))
            rows.append([float(len(gold & pred)), float(len(pred)), float(len(gold))])
        values = np.array(rows)
        ids = tuple(str(r["index"]) for r in records)
        if metric == "f1":
            return UnitStats(ids, values, "f1")
        # Entity-level precision and recall are ratios of the same additive counts: tp / predicted, tp / gold.
        return UnitStats(ids, values[:, [0, 1 if metric == "precision" else 2]], "ratio")
    if task_type == "parsing" and metric in ("uas", "las", "clas"):
        return _parsing_stats(records, metric, where)
    raise XbenchError(f"{where}: paired significance is not available for {task_type} / {metric}: its prediction "
                      "files do not hold what the metric needs per example")


def _parsing_stats(records: Sequence[Mapping[str, Any]], metric: str, where: str) -> UnitStats:
    """Per sentence: [correct, words] for UAS and LAS, [correct, predicted, gold] content words for CLAS."""
    import numpy as np

    from udtools.udeval import CONTENT_DEPRELS

    rows = []
    for r in records:
        if "gold_heads" not in r:
            raise XbenchError(f"{where}: parsing predictions without gold heads and relations (written before "
                              "xbench recorded them); rerun to get a paired test")
        heads, rels, gheads, grels = r["heads"], r["deprels"], r["gold_heads"], r["gold_deprels"]
        if not (len(heads) == len(rels) == len(gheads) == len(grels)):
            raise XbenchError(f"{where}: sentence {r.get('index')} has predictions for {len(heads)} words, gold for "
                              f"{len(gheads)}")
        head_ok = [h == g for h, g in zip(heads, gheads)]
        both_ok = [ok and p == g for ok, p, g in zip(head_ok, rels, grels)]
        if metric == "uas":
            rows.append([float(sum(head_ok)), float(len(heads))])
        elif metric == "las":
            rows.append([float(sum(both_ok)), float(len(heads))])
        else:
            rows.append([float(sum(ok and g in CONTENT_DEPRELS for ok, g in zip(both_ok, grels))),
                         float(sum(p in CONTENT_DEPRELS for p in rels)), float(sum(g in CONTENT_DEPRELS for g in grels))])
    return UnitStats(tuple(str(r["index"]) for r in records), np.array(rows), "f1" if metric == "clas" else "ratio")


def predictions_path(result_path: str | Path, unit: str) -> Path:
    path = Path(result_path)
    return path.with_suffix("").with_name(path.stem + ".predictions") / f"{unit}.jsonl"


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """A unit's prediction records, parsed once per process while the file is unchanged: the leaderboard
    reads one file for every metric of a task, for the paired test and for the chance level."""
    from xbench.data.textfiles import memoised, read_jsonl

    return [record for _, record in memoised(read_jsonl, path)]


def load_unit(result: Mapping[str, Any], unit: str, metric: str) -> UnitStats:
    """A unit's statistics from the predictions beside a result file, checked against its recorded score."""
    path = predictions_path(result["_path"], unit)
    if not path.is_file():
        raise XbenchError(f"{result['_path']}: no predictions for {unit} ({path} is missing); paired significance "
                          "needs the predictions the run wrote")
    records = read_predictions(path)
    stats = unit_stats(result["task"]["type"], metric, records, unit, result.get("scoring") or {}, str(path))
    recorded = result["scores"]["per_language"].get(unit, {}).get(metric)
    again = float(metric_of(stats.values.sum(axis=0), len(stats.ids), stats.kind))
    if recorded is None or abs(again - float(recorded)) > 1e-6:
        raise XbenchError(f"{path}: the predictions give {metric} {again:.6f}, the result records {recorded}; "
                          "they are not the predictions behind this score")
    return stats


def _aligned(method: Mapping[int, UnitStats], base: Mapping[int, UnitStats], what: str) -> tuple[Any, Any, str, int]:
    """(method values, baseline values) as seeds x n x k arrays in one example order."""
    import numpy as np

    only_m, only_b = sorted(set(method) - set(base)), sorted(set(base) - set(method))
    if only_m or only_b:
        raise XbenchError(f"{what}: seeds must pair up; seed(s) {only_m or only_b} present for the "
                          f"{'method' if only_m else 'baseline'} only")
    if not method:
        raise XbenchError(f"{what}: no seeds to compare")
    seeds = sorted(method)
    order = sorted(method[seeds[0]].ids)
    kinds = {s.kind for s in [*method.values(), *base.values()]}
    if len(kinds) != 1:
        raise XbenchError(f"{what}: the two sides score the unit differently ({sorted(kinds)})")
    out = []
    for side, name in ((method, "method"), (base, "baseline")):
        arrs = []
        for seed in seeds:
            st = side[seed]
            if sorted(st.ids) != order or len(set(st.ids)) != len(st.ids):
                missing = sorted(set(order) - set(st.ids))[:3]
                extra = sorted(set(st.ids) - set(order))[:3]
                raise XbenchError(f"{what}: the {name}'s seed {seed} has other examples than the method's seed "
                                  f"{seeds[0]} (missing {missing}, extra {extra}, or repeated ids); a paired "
                                  "test needs the same examples on both sides")
            pos = {i: k for k, i in enumerate(st.ids)}
            arrs.append(st.values[[pos[i] for i in order]])
        out.append(np.stack(arrs))
    return out[0], out[1], kinds.pop(), len(order)


def _draws(a: Any, b: Any, kind: str, n: int, rng: Any, resamples: int) -> tuple[float, Any, Any]:
    """Observed Δ, bootstrap Δs and permutation Δs of one unit (mean over seeds of method − baseline)."""
    import numpy as np

    observed = float(np.mean(metric_of(a.sum(axis=1), n, kind) - metric_of(b.sum(axis=1), n, kind)))
    boot, perm = np.empty(resamples), np.empty(resamples)
    diff = b - a  # swapping an example moves its statistics from one side to the other
    for start in range(0, resamples, CHUNK):
        size = min(CHUNK, resamples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(float)  # size x n
        sa = np.einsum("rn,snk->rsk", counts, a)
        sb = np.einsum("rn,snk->rsk", counts, b)
        boot[start:start + size] = (metric_of(sa, n, kind) - metric_of(sb, n, kind)).mean(axis=1)
        swap = rng.integers(0, 2, size=(size, n)).astype(float)
        moved = np.einsum("rn,snk->rsk", swap, diff)
        pa, pb = a.sum(axis=1)[None] + moved, b.sum(axis=1)[None] - moved
        perm[start:start + size] = (metric_of(pa, n, kind) - metric_of(pb, n, kind)).mean(axis=1)
    return observed, boot, perm


def _summary(observed: float, boot: Any, perm: Any, n: int, seeds: tuple[int, ...]) -> PairedDelta:
    import numpy as np

    low, high = (float(x) for x in np.percentile(boot, [2.5, 97.5]))
    extreme = int(np.sum(np.abs(perm) >= abs(observed) - 1e-12))
    return PairedDelta(observed, low, high, (1 + extreme) / (len(perm) + 1), n, seeds)


def paired_test(method: Mapping[str, Mapping[int, UnitStats]], base: Mapping[str, Mapping[int, UnitStats]],
                *, what: str, resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, PairedDelta]:
    """Per unit and for their macro average ("avg"): Δ, 95% CI, p (see the module docstring).

    `method` and `base` map unit -> seed -> statistics; both must have the same units and seeds.
    """
    import numpy as np

    if set(method) != set(base):
        raise XbenchError(f"{what}: units differ (method {sorted(method)}, baseline {sorted(base)})")
    if not method:
        raise XbenchError(f"{what}: no units to compare")
    if resamples < 100:
        raise XbenchError(f"{what}: {resamples} resamples are too few for a 95% interval (at least 100)")
    out: dict[str, PairedDelta] = {}
    obs, boots, perms, total, seeds = [], [], [], 0, None
    for i, unit in enumerate(sorted(method)):
        a, b, kind, n = _aligned(method[unit], base[unit], f"{what}, unit {unit}")
        unit_seeds = tuple(sorted(method[unit]))
        if seeds is not None and unit_seeds != seeds:
            raise XbenchError(f"{what}: unit {unit} has seeds {list(unit_seeds)}, other units {list(seeds)}")
        seeds = unit_seeds
        rng = np.random.default_rng([seed, i])
        o, bt, pm = _draws(a, b, kind, n, rng, resamples)
        out[unit] = _summary(o, bt, pm, n, unit_seeds)
        obs.append(o)
        boots.append(bt)
        perms.append(pm)
        total += n
    assert seeds is not None
    macro = float(np.mean(obs))
    out["avg"] = _summary(macro, np.mean(boots, axis=0), np.mean(perms, axis=0), total, seeds)
    if not all(math.isfinite(d.delta) for d in out.values()):
        raise XbenchError(f"{what}: a difference is not finite")
    return out


def compare_results(method_results: Mapping[int, Mapping[str, Any]], base_results: Mapping[int, Mapping[str, Any]],
                    units: Sequence[str], metric: str, *, what: str, resamples: int = N_RESAMPLES,
                    seed: int = 0) -> dict[str, PairedDelta]:
    """`paired_test` on the predictions beside two rows' result files (seed -> result dict with `_path`)."""
    m = {u: {s: load_unit(r, u, metric) for s, r in method_results.items()} for u in units}
    b = {u: {s: load_unit(r, u, metric) for s, r in base_results.items()} for u in units}
    return paired_test(m, b, what=what, resamples=resamples, seed=seed)
