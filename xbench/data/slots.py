"""Named data slots: the data a paper profile reads that the shared data does not hold
(docs/protocols.md, "Data slots").

A user fills a slot with a local file or a hub dataset, on the command line (`--slot mono_de=PATH`)
or in a YAML file (`--slots slots.yaml`: a mapping slot -> path, or slot -> {hub:, config:, split:,
revision:}). A run reads slots only under a profile with the standard data setting (the paper
profile); each slot it reads is recorded with its provenance and hash, and a slot it needs but
lacks stops the run in the pre-flight unless `--allow-fallback` lets the shared-data substitute
stand in (the rows are then flagged `fallback: <slot>`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xbench.data.pools import TextPool, build_pool, evaluation_texts, fill_pool, pool_text_files
from xbench.data.sources import data_roots
from xbench.data.textfiles import parse_json_line
from xbench.errors import ConfigError, DataFormatError, XbenchError

# Slot names of docs/protocols.md, "Data slots": (pattern, kind). `mono` and `parallel` are text for
# pretraining stages; `task` slots stand for a task's split.
SLOT_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"mono_[a-z]{2,3}", "mono"),
    (r"parallel_[a-z]{2,3}_[a-z]{2,3}", "parallel"),
    (r"mnli_train|squad_train|mlqa_test", "task"),
    (r"(xnli_mt|tydiqa_dev|wikiann_test|conll_ner)_[a-z]{2,3}", "task"),
    (r"ud_train_[A-Za-z0-9_.-]+", "task"),
)
SLOT_NAMES_HELP = ("mono_<lang>, parallel_<src>_<tgt>, mnli_train, xnli_mt_<lang>, squad_train, mlqa_test, "
                   "tydiqa_dev_<lang>, ud_train_<treebank>, wikiann_test_<lang>, conll_ner_<lang>")
MONO_SUFFIXES = (".txt", ".txt.gz")
PARALLEL_SUFFIXES = (".tsv", ".tsv.gz", ".jsonl", ".jsonl.gz")
# A value with one of these endings, or written as a path, is a file even when it does not exist (a
# missing file is reported as such, not looked up on the hub).
_FILE_ENDINGS = (".txt", ".gz", ".tsv", ".jsonl", ".json", ".conllu", ".yaml", ".yml", ".csv")
_HUB_KEYS = ("hub", "config", "split", "revision")


def slot_kind(name: str) -> str | None:
    """'mono', 'parallel' or 'task' for a valid slot name; None otherwise."""
    for pattern, kind in SLOT_PATTERNS:
        if re.fullmatch(pattern, name):
            return kind
    return None


@dataclass(frozen=True)
class SlotSpec:
    """What fills one slot: a local file (`path`) or a hub dataset (`hub` and its config, split, revision)."""

    name: str
    origin: str  # where it was given: "--slot" or the YAML file
    path: str | None = None
    hub: str | None = None
    config: str | None = None
    split: str = "train"
    revision: str | None = None

    def describe(self) -> dict[str, Any]:
        """The spec as the run's config records it (the content hash is recorded with the data)."""
        if self.path is not None:
            return {"path": str(Path(self.path).expanduser().resolve())}
        return {"hub": self.hub, "config": self.config, "split": self.split, "revision": self.revision}


@dataclass
class SlotSet:
    """The slots of one run: what the user filled, whether the profile reads slots, and --allow-fallback."""

    specs: dict[str, SlotSpec] = field(default_factory=dict)
    active: bool = False  # the profile's data setting is "standard": large data comes through slots
    allow_fallback: bool = False

    def get(self, name: str) -> SlotSpec | None:
        return self.specs.get(name) if self.active else None

    def config(self) -> dict[str, Any]:
        """For the run's config (and so its identity); empty when no slot option was given."""
        out: dict[str, Any] = {}
        if self.specs:
            out["slots"] = {name: spec.describe() for name, spec in sorted(self.specs.items())}
        if self.allow_fallback:
            out["allow_fallback"] = True
        return out


def _looks_like_path(value: str) -> bool:
    return (Path(value).expanduser().exists() or value.startswith((".", "/", "~")) or value.count("/") > 1
            or "\\" in value or value.lower().endswith(_FILE_ENDINGS))


def parse_spec(name: str, value: Any, origin: str) -> tuple[SlotSpec | None, list[str]]:
    """One slot's value (a path or hub-name string, or a {path:} / {hub:, config:, split:, revision:}
    mapping) as a SlotSpec, or the problems with it."""
    where = f"{origin}: slot '{name}'"
    if slot_kind(name) is None:
        return None, [f"{where}: unknown slot name; valid slots: {SLOT_NAMES_HELP}"]
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None, [f"{where}: empty value; expected a file path or a hub dataset name"]
        if text.startswith("hub:"):
            return SlotSpec(name, origin, hub=text[4:].strip()), []
        if _looks_like_path(text):
            return SlotSpec(name, origin, path=text), []
        return SlotSpec(name, origin, hub=text), []
    if isinstance(value, dict):
        if "path" in value:
            extra = sorted(set(value) - {"path"})
            if extra or not isinstance(value["path"], str) or not value["path"].strip():
                return None, [f"{where}: a local slot is {{path: FILE}} with a non-empty path and no other key"
                              + (f" (found {', '.join(map(str, extra))})" if extra else "")]
            return SlotSpec(name, origin, path=value["path"].strip()), []
        unknown = sorted(map(str, set(value) - set(_HUB_KEYS)))
        problems = [f"{where}: unknown key(s) {', '.join(unknown)}; valid: path, or {', '.join(_HUB_KEYS)}"] if unknown else []
        bad = [k for k in _HUB_KEYS if k in value and value[k] is not None and not isinstance(value[k], (str, int))]
        problems += [f"{where}: '{k}' must be text, got {value[k]!r}" for k in bad]
        if not isinstance(value.get("hub"), str) or not value["hub"].strip():
            problems.append(f"{where}: a hub slot needs 'hub: <dataset name>'")
        if problems:
            return None, problems
        opt = {k: (str(value[k]) if value.get(k) is not None else None) for k in ("config", "revision")}
        return SlotSpec(name, origin, hub=value["hub"].strip(), split=str(value.get("split") or "train"), **opt), []
    return None, [f"{where}: expected a path, a hub dataset name or a mapping, got {type(value).__name__}"]


def parse_slots(items: dict[str, Any], slots_file: str | None) -> tuple[dict[str, SlotSpec], list[str]]:
    """The slots of `--slots FILE` overridden by `--slot name=value` items, and every problem with them."""
    specs: dict[str, SlotSpec] = {}
    problems: list[str] = []
    if slots_file:
        raw, file_problems = _read_slots_file(Path(slots_file))
        problems += file_problems
        for name, value in raw.items():
            spec, spec_problems = parse_spec(str(name), value, f"--slots {slots_file}")
            problems += spec_problems
            if spec is not None:
                specs[spec.name] = spec
    for name, value in items.items():
        spec, spec_problems = parse_spec(name, value, "--slot")
        problems += spec_problems
        if spec is not None:
            specs[spec.name] = spec
    return specs, problems


def _read_slots_file(path: Path) -> tuple[dict[str, Any], list[str]]:
    import yaml

    from xbench.profiles import load_yaml

    if not path.is_file():
        return {}, [f"--slots {path}: no such file"]
    try:
        raw = load_yaml(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        return {}, [f"--slots {path}: not UTF-8 text"]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return {}, [f"--slots {path}" + (f", line {mark.line + 1}" if mark else "") + f": not valid YAML ({exc})"]
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, [f"--slots {path}: expected a mapping slot -> path or {{hub: name, config:, split:, revision:}}, "
                    f"got {type(raw).__name__}"]
    return raw, []


# --------------------------------------------------------------------------- what a run needs


def fallback_of(name: str) -> str:
    """The shared-data substitute of a slot, in words (for the pre-flight message and the result)."""
    if name.startswith("mono_"):
        lang = name[len("mono_"):]
        return f"the shared-data '{lang}-mono' pool ({', '.join(pool_text_files(lang))})"
    if name.startswith("parallel_"):
        src, tgt = name.split("_")[1:]
        return f"the shared-data 'en-{tgt if src == 'en' else src}-par' pairs (tatoeba/ and the XNLI dev-train part)"
    return "the task card's shared-data protocol split"


def needed_slots(method: Any, slots: SlotSet | None) -> list[str]:
    """The slots the method reads under this run's profile (none when the profile does not read slots)."""
    if slots is None or not slots.active:
        return []
    reads = getattr(method, "data_slots", None)
    return list(reads()) if callable(reads) else []


def missing_message(name: str, needed_by: str) -> str:
    return (f"data slot '{name}' is needed by {needed_by} and is not filled: pass --slot {name}=PATH (or a hub "
            f"dataset name) or list it in --slots FILE (docs/protocols.md, 'Data slots'); the shared-data fallback "
            f"would be {fallback_of(name)}, used only with --allow-fallback (the rows are then flagged "
            f"'fallback: {name}')")


# --------------------------------------------------------------------------- reading a slot


def _suffix_ok(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.name.lower().endswith(suffixes)


def spec_problems(spec: SlotSpec) -> list[str]:
    """Why `spec` cannot be read, found before any work: a missing or unreadable file, a wrong kind of
    file, a hub dataset while offline or without the `datasets` package."""
    from xbench.loading import hub_offline

    kind = slot_kind(spec.name)
    where = f"slot '{spec.name}' ({spec.origin})"
    if spec.hub is not None:
        if hub_offline():
            return [f"{where} names the hub dataset '{spec.hub}', but offline mode is on "
                    "(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE): give a local file instead, or run online"]
        import importlib.util

        if importlib.util.find_spec("datasets") is None:
            return [f"{where} names the hub dataset '{spec.hub}', which needs the `datasets` package (pip install datasets)"]
        return []
    path = Path(str(spec.path)).expanduser()
    if not path.is_file():
        return [f"{where}: {path} " + ("is a folder; expected a file" if path.is_dir() else "does not exist")]
    if kind == "mono" and not _suffix_ok(path, MONO_SUFFIXES):
        return [f"{where}: {path}: expected a text file, one sentence or document per line ({', '.join(MONO_SUFFIXES)})"]
    if kind == "parallel" and not _suffix_ok(path, PARALLEL_SUFFIXES):
        return [f"{where}: {path}: expected TSV (src<TAB>tgt) or JSONL with src and tgt ({', '.join(PARALLEL_SUFFIXES)})"]
    try:
        if kind == "mono":
            read_mono(spec)
        elif kind == "parallel":
            src, tgt = spec.name.split("_")[1:]
            read_parallel(spec, src, tgt)
    except XbenchError as exc:
        return [f"{where}: {exc}"]
    return []


def _lines(path: Path) -> list[str]:
    """The file's lines, parsed once per process (the pre-flight reads a slot, the run reads it again)."""
    from xbench.data.textfiles import memoised

    return memoised(_read_lines, path)


def _read_lines(path: Path) -> list[str]:
    from xbench.data.textfiles import read_text

    return read_text(path).splitlines()


def _local_record(spec: SlotSpec, path: Path) -> dict[str, Any]:
    from xbench.data.sources import file_hash

    return {"slot": spec.name, "source": "local", "files": [{"path": str(path.resolve()), "sha256": file_hash(path)}]}


def _hub_dataset(spec: SlotSpec) -> tuple[Any, dict[str, Any]]:
    from xbench.loading import hub_offline

    if hub_offline():
        raise XbenchError(f"slot '{spec.name}' names the hub dataset '{spec.hub}', but offline mode is on")
    import datasets  # heavy; only for hub slots

    ds = datasets.load_dataset(spec.hub, spec.config, split=spec.split, revision=spec.revision)
    return ds, {"slot": spec.name, "source": "hub",
                "hub": {"path": spec.hub, "name": spec.config, "split": spec.split, "revision": spec.revision,
                        "fingerprint": getattr(ds, "_fingerprint", None)}}


def read_mono(spec: SlotSpec) -> tuple[list[str], dict[str, Any]]:
    """The lines of a `mono_<lang>` slot and its provenance record (file and SHA-256, or hub dataset)."""
    if spec.hub is not None:
        ds, record = _hub_dataset(spec)
        column = "text" if "text" in ds.column_names else None
        if column is None:
            raise XbenchError(f"slot '{spec.name}': hub dataset '{spec.hub}' has no 'text' column "
                              f"(columns: {', '.join(ds.column_names)})")
        return [str(x) for x in ds[column]], record
    path = Path(str(spec.path)).expanduser()
    lines = _lines(path)
    if not any(x.strip() for x in lines):
        raise DataFormatError(path, "file has no text", expected="one sentence or document per line")
    return lines, _local_record(spec, path)


def read_parallel(spec: SlotSpec, src: str, tgt: str) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """(src, tgt) pairs of a `parallel_<src>_<tgt>` slot: TSV `src<TAB>tgt`, or JSONL with `src`, `tgt`
    (and optionally `src_lang`, `tgt_lang`, which must then name the slot's languages)."""
    if spec.hub is not None:
        ds, record = _hub_dataset(spec)
        if "translation" not in ds.column_names:
            raise XbenchError(f"slot '{spec.name}': hub dataset '{spec.hub}' has no 'translation' column")
        return [(r[src], r[tgt]) for r in ds["translation"]], record
    path = Path(str(spec.path)).expanduser()
    pairs: list[tuple[str, str]] = []
    jsonl = ".jsonl" in path.name.lower()
    for i, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        if jsonl:
            row = parse_json_line(line, path, i)
            if not isinstance(row, dict) or not isinstance(row.get("src"), str) or not isinstance(row.get("tgt"), str):
                raise DataFormatError(path, "a row needs text fields 'src' and 'tgt'", line=i,
                                      expected='{"src": ..., "tgt": ..., "src_lang": ..., "tgt_lang": ...}')
            langs = (row.get("src_lang", src), row.get("tgt_lang", tgt))
            if langs != (src, tgt):
                raise DataFormatError(path, f"languages {langs[0]}-{langs[1]}", line=i, field="src_lang/tgt_lang",
                                      expected=f"{src}-{tgt} (the slot's)")
            pairs.append((row["src"], row["tgt"]))
        else:
            cols = line.split("\t")
            if len(cols) != 2:
                raise DataFormatError(path, f"found {len(cols)} tab-separated columns", line=i,
                                      expected=f"2 columns: {src} text, {tgt} text")
            pairs.append((cols[0], cols[1]))
    if not pairs:
        raise DataFormatError(path, "file has no pairs", expected="one pair per line")
    record = _local_record(spec, path)
    return pairs, record


def slot_record(spec: SlotSpec) -> dict[str, Any]:
    """A filled slot's provenance for the result: the file's resolved path and SHA-256, or the hub dataset."""
    if spec.hub is not None:
        return {"slot": spec.name, "source": "hub", "origin": spec.origin,
                "hub": {"path": spec.hub, "name": spec.config, "split": spec.split, "revision": spec.revision}}
    return {**_local_record(spec, Path(str(spec.path)).expanduser()), "origin": spec.origin}


def run_slots(method: Any, slots: SlotSet | None) -> tuple[dict[str, Any], list[str]]:
    """({slot: record} for every slot the method reads in this run, [slots standing in by fallback]).

    A filled slot's record is its provenance and hash; an unfilled one (possible only with
    --allow-fallback, the pre-flight refuses it otherwise) records the shared-data substitute used.
    """
    records: dict[str, Any] = {}
    fallback: list[str] = []
    for name in needed_slots(method, slots):
        spec = slots.get(name) if slots is not None else None
        if spec is not None:
            records[name] = slot_record(spec)
        else:
            records[name] = {"slot": name, "fallback": fallback_of(name)}
            fallback.append(name)
    return records, fallback


# --------------------------------------------------------------------------- task-data slots
#
# A filled task slot replaces the split it stands for; an unfilled one leaves the card's own lookup (the
# data roots, then the hub) as it was, so a paper run that reads MultiNLI from the hub still does.
# Implemented: XNLI's training data (sentence-pair classification). The other task slots of
# docs/protocols.md, "Data slots" are refused in the pre-flight until their readers exist.


def task_slot(card: Any, lang: str, split: str) -> str | None:
    """The slot that stands for the `lang`/`split` load of `card`, where xbench reads one."""
    if card.name == "xnli" and split == "train":
        return "mnli_train" if lang == "en" else f"xnli_mt_{lang}"
    return None


def read_pair_slot(spec: SlotSpec, labels: list[str], placeholders: set[str]) -> tuple[list[Any], Any]:
    """Sentence pairs with labels from a slot: a TSV premise<TAB>hypothesis<TAB>label (the XTREME layout), a
    MultiNLI JSONL (sentence1, sentence2, gold_label), or a hub dataset with premise, hypothesis, label."""
    from xbench.data.pair_tsv import PairExample, _check_label, read_per_language_tsv
    from xbench.data.sources import Provenance
    from xbench.data.textfiles import memoised

    if spec.hub is not None:
        ds, record = _hub_dataset(spec)
        feature = ds.features.get("label") if hasattr(ds, "features") else None
        names = list(getattr(feature, "names", labels))
        if names != list(labels):
            raise XbenchError(f"slot '{spec.name}': hub dataset '{spec.hub}' has labels {names}, the task expects {labels}")
        examples = [PairExample(r["premise"], r["hypothesis"], int(r["label"])) for r in ds if int(r["label"]) >= 0]
        return examples, Provenance("hub", hub=record["hub"], selection={"slot": spec.name})
    path = Path(str(spec.path)).expanduser()
    if path.name.lower().endswith((".jsonl", ".jsonl.gz")):
        examples = []
        for i, line in enumerate(_lines(path), start=1):
            if not line.strip():
                continue
            row = parse_json_line(line, path, i)
            if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("sentence1", "sentence2")):
                raise DataFormatError(path, "a row needs text fields 'sentence1' and 'sentence2'", line=i)
            examples.append(PairExample(row["sentence1"], row["sentence2"],
                                        _check_label(str(row.get("gold_label", "")), labels, placeholders, path, i)))
        if not examples:
            raise DataFormatError(path, "file is empty", expected="one JSON object per line")
    elif path.name.lower().endswith(".tsv"):
        examples = memoised(read_per_language_tsv, path, labels, placeholders)
    else:
        raise DataFormatError(path, "unknown file type", expected="a .tsv (premise, hypothesis, label) or a MultiNLI .jsonl")
    record = _local_record(spec, path)
    return examples, Provenance("local", files=record["files"], selection={"slot": spec.name})


def bind_task_slots(task_type: Any, slots: SlotSet | None) -> dict[str, Any]:
    """Make `task_type` (an instance) read the splits of its filled task slots from them; every other load
    is the task type's own. Returns the dict that collects the records of the task slots read (for the
    result's `task.slots`). The instance keeps its class, so nothing that inspects the type changes."""
    used: dict[str, Any] = {}
    card = task_type.card
    if slots is None or not any(slot_kind(n) == "task" and slots.get(n) for n in slots.specs):
        return used
    own_load = task_type.load

    def load(lang: str, split: str, data_dir: Any, *, for_eval: bool) -> Any:
        name = task_slot(card, lang, split)
        spec = slots.get(name) if name else None
        if spec is None:
            return own_load(lang, split, data_dir, for_eval=for_eval)
        from xbench.data.pair_tsv import check_scorable
        from xbench.data.split import Split

        labels = list(card.params["labels"])
        examples, prov = read_pair_slot(spec, labels, {p.lower() for p in card.params.get("placeholder_labels", [])})
        if for_eval:
            check_scorable(examples, labels, f"{card.name} {lang}/{split} (slot {spec.name})")
        used[spec.name] = slot_record(spec)
        return Split(lang, split, examples, prov)

    task_type.load = load
    return used


def task_slots_supported(name: str) -> bool:
    """Whether xbench reads this task slot (mnli_train, xnli_mt_<lang>)."""
    return name == "mnli_train" or name.startswith("xnli_mt_")


# --------------------------------------------------------------------------- pools from slots


def slot_pool(lang: str, spec: Any, data_dir: str | Path | None = None) -> TextPool:
    """The `<lang>` pool of a paper-profile run from its filled `mono_<lang>` slot (docs/protocols.md, "Data
    slots"): the slot's lines, with the same hygiene as a shared-data pool: sentences of the evaluation
    splits in the data roots are dropped, as are duplicates."""
    lines, record = read_mono(spec)
    roots = data_roots(data_dir)
    pool = TextPool(lang, [])
    file_record = record["files"][0] if record.get("files") else {"hub": record["hub"]}
    fill_pool(pool, [(f"slot:{spec.name}", file_record, lines)], evaluation_texts(roots, lang) if roots else set())
    return pool


def method_pool(lang: str, data_dir: str | Path | None, slots: Any) -> TextPool:
    """The text pool a method's pretraining reads for `lang`: the `mono_<lang>` slot where the run's
    profile reads slots (the paper profile), else (or, with --allow-fallback, for an unfilled slot) the
    shared-data pool."""
    if slots is None or not slots.active:
        return build_pool(lang, data_dir)
    spec = slots.get(f"mono_{lang}")
    if spec is not None:
        return slot_pool(lang, spec, data_dir)
    if slots.allow_fallback:
        return build_pool(lang, data_dir)
    raise ConfigError(missing_message(f"mono_{lang}", "this method's pretraining"))


def method_parallel(lang: str, data_dir: str | Path | None, slots: Any, who: str,
                    source_lang: str = "en") -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """(en, xx) sentence pairs a method trains on, and their manifest: the `parallel_en_<lang>` slot where
    the run's profile reads slots, else (or, with --allow-fallback, for an unfilled slot) the shared
    data's en-<lang>-par pool (docs/data.md, "Parallel pairs"). `who` names the reader in the message
    for a missing slot."""
    if slots is not None and slots.active:
        spec = slots.get(f"parallel_{source_lang}_{lang}")
        if spec is not None:
            raw, record = read_parallel(spec, source_lang, lang)
            pairs = [(a.strip(), b.strip()) for a, b in raw if a.strip() and b.strip()]
            return pairs, {"lang": lang, "pairs": len(pairs), "slot": record, "dropped": {"empty": len(raw) - len(pairs)}}
        if not slots.allow_fallback:
            raise XbenchError(missing_message(f"parallel_{source_lang}_{lang}", who))
    from xbench.data.pools import build_parallel

    pool = build_parallel(lang, data_dir)
    return list(pool.pairs), pool.manifest()
