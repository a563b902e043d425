"""Sentence-pair classification data: the two XNLI TSV layouts and the hub."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbench.data.resolve import local_then_hub, no_hub
from xbench.data.sources import Provenance
from xbench.data.textfiles import memoised, read_text
from xbench.errors import DataFormatError, XbenchError


@dataclass(frozen=True)
class PairExample:
    premise: str
    hypothesis: str
    label: int


def _check_label(raw: str, labels: list[str], placeholders: set[str], path: Path, line: int) -> int:
    value = raw.strip()
    if value.lower() in placeholders:
        raise DataFormatError(path, f"label is missing or a placeholder ({value!r})", line=line, field="label",
                              expected=" / ".join(labels))
    if value not in labels:
        raise DataFormatError(path, f"unknown label {value!r}", line=line, field="label", expected=" / ".join(labels))
    return labels.index(value)


def read_per_language_tsv(path: Path, labels: list[str], placeholders: set[str]) -> list[PairExample]:
    """XTREME layout: premise<TAB>hypothesis<TAB>label, no header, no quoting."""
    examples: list[PairExample] = []
    # newline="" splits lines as open(..., newline="") did; reading the bytes first lets a decoding
    # error name its line instead of escaping as a UnicodeDecodeError.
    for i, line in enumerate(io.StringIO(read_text(path), newline=""), start=1):
        line = line.rstrip("\n").rstrip("\r")
        if not line:
            continue
        cols = line.split("\t")
        if len(cols) != 3:
            raise DataFormatError(path, f"found {len(cols)} tab-separated columns", line=i,
                                  expected="3 columns: premise, hypothesis, label")
        examples.append(PairExample(cols[0], cols[1], _check_label(cols[2], labels, placeholders, path, i)))
    if not examples:
        raise DataFormatError(path, "file is empty", expected="one premise<TAB>hypothesis<TAB>label line per example")
    return examples


OFFICIAL_COLUMNS = ("language", "gold_label", "sentence1", "sentence2")


def read_official_tsv(path: Path, lang: str, labels: list[str], placeholders: set[str]) -> list[PairExample]:
    """The XNLI-1.0 release: one file per split, a header, and a `language` column."""
    examples: list[PairExample] = []
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if header is None:
        raise DataFormatError(path, "file is empty", expected="a header line with " + ", ".join(OFFICIAL_COLUMNS))
    missing = [c for c in OFFICIAL_COLUMNS if c not in header]
    if missing:
        raise DataFormatError(path, f"header lacks column(s) {', '.join(missing)}", line=1)
    idx = {c: header.index(c) for c in OFFICIAL_COLUMNS}
    for i, row in enumerate(reader, start=2):
        if len(row) != len(header):
            raise DataFormatError(path, f"found {len(row)} columns", line=i, expected=f"{len(header)} as in the header")
        if row[idx["language"]] != lang:
            continue
        examples.append(PairExample(row[idx["sentence1"]], row[idx["sentence2"]],
                                    _check_label(row[idx["gold_label"]], labels, placeholders, path, i)))
    if not examples:
        raise DataFormatError(path, f"no rows for language '{lang}'", field="language")
    return examples


def _from_hub(hub: dict[str, Any], lang: str, split: str, labels: list[str]) -> tuple[list[PairExample], Provenance]:
    hub_split = hub.get("splits", {}).get(split, split)
    name = hub.get("name", "{lang}").format(lang=lang)
    import datasets  # heavy; only on the hub path

    ds = datasets.load_dataset(hub["path"], name, split=hub_split, revision=hub.get("revision"))
    names = ds.features["label"].names if hasattr(ds.features["label"], "names") else labels
    if list(names) != list(labels):
        raise XbenchError(f"hub dataset {hub['path']} has labels {names}, the card expects {labels}")
    examples = [PairExample(r["premise"], r["hypothesis"], int(r["label"])) for r in ds]
    bad = sum(1 for e in examples if e.label < 0)
    if bad:
        raise XbenchError(f"hub dataset {hub['path']}/{name} split {hub_split}: {bad} rows have no label (-1)")
    prov = Provenance("hub", hub={"path": hub["path"], "name": name, "split": hub_split,
                                  "revision": hub.get("revision"), "fingerprint": ds._fingerprint})
    return examples, prov


def load_pair_split(card_data: dict[str, Any], params: dict[str, Any], lang: str, split: str,
                    data_dir: str | Path | None) -> tuple[list[PairExample], Provenance]:
    """Load one (language, split), resolving derived splits such as dev-train to a row range."""
    labels = list(params["labels"])
    placeholders = {p.lower() for p in params.get("placeholder_labels", [])}
    derived = card_data.get("derived_splits", {}).get(split)
    base = derived["from"] if derived else split
    layouts = card_data.get("local", [])
    hub = card_data.get("hub")

    def read_local(i: int, path: Path) -> list[PairExample]:
        layout = layouts[i]
        if layout["layout"] == "per-language-tsv":
            return memoised(read_per_language_tsv, path, labels, placeholders)
        if layout["layout"] == "official-xnli-tsv":
            return memoised(read_official_tsv, path, lang, labels, placeholders)
        raise XbenchError(f"unknown local layout '{layout['layout']}' in the task card")

    local_hint = " or ".join(layout["path"] for layout in layouts)
    examples, prov = local_then_hub(
        [layout["path"].format(split=base, lang=lang) for layout in layouts], read_local,
        (lambda: _from_hub(hub, lang, base, labels)) if hub is not None else no_hub("no hub source in the task card"),
        data_dir=data_dir, what=f"{lang}/{base}", local_hint=local_hint.format(split=base, lang=lang),
        hub_hint=f"datasets.load_dataset('{hub['path']}', '{lang}') split {base}" if hub else None)
    if derived:
        lo, hi = derived["rows"]
        if len(examples) < hi:
            raise XbenchError(f"{lang}/{base} has {len(examples)} rows; derived split '{split}' needs rows {lo}:{hi}")
        examples = examples[lo:hi]
        prov.selection = {"split": split, "rows": [lo, hi]}
    return examples, prov


def check_scorable(examples: list[PairExample], labels: list[str], what: str) -> None:
    """Evaluation data must have real, varied labels; a one-class test set scores nothing."""
    classes = {e.label for e in examples}
    if len(classes) < 2 and len(examples) > 1:
        raise XbenchError(f"{what}: every label is '{labels[next(iter(classes))]}'; evaluation data with one class "
                          "cannot measure anything (are the labels placeholders?)")
