"""Task type: extractive QA in the SQuAD format (MLQA, XQuAD, TyDiQA-GoldP). Metrics: EM and F1.

Evaluation units. A unit is what gets one score (one column of a leaderboard):

* ``"de"``: question and context in German (MLQA's XLT cells, and every XQuAD/TyDiQA language);
* ``"c=de,q=en"``: a German context with an English question (an MLQA G-XLT cell; only cards with
  ``params.g_xlt: true``, chosen with ``--question-langs``). A diagonal cell is always named by its
  language alone, so XLT scores have the same name in XLT and G-XLT runs. ``parse_unit`` and
  ``unit_name`` (xbench/results/averages.py, where result files are read without any task type)
  convert.

Where data comes from is declared by the card: ``data.splits`` maps each split a protocol names to
a source and the source's own split, and ``data.sources`` lists per source its local layouts
(tried first, under XBENCH_DATA / --data-dir) and its hub dataset. That is how the zero-shot
training data differ by setting: a protocol's ``train.split`` (SQuAD v1.1 from the hub) and
``train.shared`` (the English TyDiQA-GoldP train file) are two entries of ``data.splits``.
Files whose gold answers are all blank (the TyDiQA-GoldP dev files as XTREME ships them) are never
used: loading falls through to the next layout or the hub, and if nothing else exists the error
names the refused file and the card's note on what to do instead.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xbench.atomic import hash_json
from xbench.data.resolve import Refused, local_then_hub, no_hub
from xbench.data.sources import Provenance
from xbench.data.squad import QAExample, read_squad
from xbench.data.textfiles import memoised
from xbench.errors import ConfigError, DataFormatError, XbenchError
from xbench.metrics.qa import SCHEMES
from xbench.cards import TaskCard
from xbench.results.averages import parse_unit, unit_name
from xbench.tasktypes.base import Split, TaskType, cached_features

_MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
_INT_PARAMS = {"max_length": 384, "doc_stride": 128, "max_query_length": 64, "n_best": 20, "max_answer_length": 30}


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def card_problems(raw: dict[str, Any]) -> list[str]:
    """Every problem with the QA-specific parts of a card (params, data sources, protocol splits)."""
    problems: list[str] = []
    params = raw.get("params") or {}
    for key in _INT_PARAMS:
        value = params.get(key, _INT_PARAMS[key])
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "doc_stride" else 1):
            problems.append(f"params.{key} must be a positive integer, got {value!r}")
    if params.get("scorer") not in SCHEMES:
        problems.append(f"params.scorer must be one of {', '.join(SCHEMES)}, got {params.get('scorer')!r}")
    langs = raw.get("languages") or []
    for lang in raw.get("average_excludes") or []:
        if lang not in langs:
            problems.append(f"average_excludes: '{lang}' is not one of the card's languages")
    data = raw.get("data") or {}
    sources, splits = data.get("sources"), data.get("splits")
    if not isinstance(sources, dict) or not sources:
        return problems + ["data.sources must map source names to their local layouts and hub dataset"]
    if not isinstance(splits, dict) or not splits:
        return problems + ["data.splits must map split names to {source, split}"]
    for name, src in sources.items():
        if not isinstance(src, dict):
            problems.append(f"data.sources.{name}: expected a mapping")
            continue
        if not src.get("local") and not src.get("hub"):
            problems.append(f"data.sources.{name}: needs 'local' layouts, a 'hub' dataset, or both")
        for i, layout in enumerate(src.get("local") or []):
            if not isinstance(layout, dict) or not _nonempty_str(layout.get("path")) or not _nonempty_str(layout.get("split")):
                problems.append(f"data.sources.{name}.local[{i}]: needs 'split' and 'path'")
        hub = src.get("hub")
        if hub is not None and (not isinstance(hub, dict) or not _nonempty_str(hub.get("path"))
                                or not isinstance(hub.get("splits"), dict)):
            problems.append(f"data.sources.{name}.hub: needs 'path' and 'splits' (xbench split -> hub split)")
        if src.get("duplicate_ids", "error") not in ("error", "number"):
            problems.append(f"data.sources.{name}.duplicate_ids must be 'error' or 'number'")
    for name, spec in splits.items():
        if not isinstance(spec, dict) or spec.get("source") not in sources or not _nonempty_str(spec.get("split")):
            problems.append(f"data.splits.{name}: needs 'source' (one of {', '.join(sources)}) and 'split'")
    for pname, proto in (raw.get("protocols") or {}).items():
        for part in ("train", "select", "eval"):
            spec = (proto or {}).get(part) if isinstance(proto, dict) else None
            if not isinstance(spec, dict):
                continue
            for key in ("split", "shared"):
                split = spec.get(key)
                if split is not None and split not in splits:
                    problems.append(f"protocols.{pname}.{part}.{key}: '{split}' is not in data.splits")
    return problems


class ExtractiveQA(TaskType):
    name = "extractive-qa"
    version = 2  # 2: eval features carry context_bounds
    option_names = ("question_langs", "few_shot")

    def __init__(self, card: TaskCard, options: dict[str, Any] | None = None) -> None:
        super().__init__(card, options)
        problems = card_problems(card.raw)
        if problems:
            raise ConfigError(problems, source=str(card.path))
        params = card.params
        self.settings = {k: int(params.get(k, v)) for k, v in _INT_PARAMS.items()}
        self.scheme: str = params["scorer"]
        self.question_langs = self._question_langs(self.options.get("question_langs"))
        self.few_shot = self._few_shot(self.options.get("few_shot"))
        # Filled while a run trains: what the model was trained on (recorded by scoring_info) and
        # the provenance hashes of that data, so that it cannot be scored as if held out.
        self.training_data: list[dict[str, Any]] = []
        self._train_hashes: set[str] = set()
        # Set by a method that reads questions through a marker token (CLISM's [QUE] head): every
        # question, in training and evaluation, ends with it (docs/methods/clism.md).
        self.question_marker: str | None = None

    def _question_langs(self, raw: Any) -> list[str] | None:
        if raw is None:
            return None
        langs = [x.strip() for x in raw.split(",")] if isinstance(raw, str) else raw
        if not self.card.params.get("g_xlt"):
            raise ConfigError(f"task '{self.card.name}' has no separate question languages "
                              "(--question-langs is for cards with params.g_xlt, such as mlqa)")
        if not isinstance(langs, list) or not langs or not all(_nonempty_str(x) for x in langs):
            raise ConfigError(f"question_langs must be a comma-separated list of languages, got {raw!r}")
        bad = [lang for lang in langs if lang not in self.card.languages]
        if bad:
            raise ConfigError(f"task '{self.card.name}' has no question language(s) {', '.join(bad)}; "
                              f"valid: {', '.join(self.card.languages)}")
        return list(dict.fromkeys(langs))

    @staticmethod
    def _few_shot(raw: Any) -> int | None:
        if raw is None:
            return None
        try:
            size = int(str(raw).strip())
        except ValueError:
            size = 0
        if size < 1:
            raise ConfigError(f"few_shot must be a positive number of training examples, e.g. few_shot=64; got {raw!r}")
        return size

    def train_subset(self, n_examples: int, seed: int) -> list[int] | None:
        """The few-shot subset of the training examples for this seed (None: train on all of them)."""
        if self.few_shot is None:
            return None
        from xbench.data.fewshot import few_shot_indices

        return few_shot_indices(n_examples, self.few_shot, seed)

    def finetune_overrides(self) -> dict[str, Any]:
        if self.few_shot is None:
            return {}
        from xbench.data.fewshot import FEW_SHOT_STEPS

        # Every few-shot fine-tuning takes the same number of optimizer steps, whatever the size.
        return {"max_steps": FEW_SHOT_STEPS, "epochs": None}

    # ------------------------------------------------------------------ units and scoring setup

    def eval_units(self, langs: list[str]) -> list[str]:
        if self.question_langs is None:
            return list(langs)
        return [unit_name(c, q) for c in langs for q in self.question_langs]

    def averaged_units(self, units: list[str]) -> list[str]:
        """Units in the average: without the card's `average_excludes`; G-XLT runs average the off-diagonal cells.

        A run of excluded languages only (xquad --langs ro) averages them, as there is nothing else;
        the result's `averaged_over` says so.
        """
        from xbench.results.averages import unit_sets  # the one definition of the averages

        return unit_sets(units, self.card.raw.get("average_excludes") or ()).get("card", list(units))

    def scoring_info(self) -> dict[str, Any]:
        s = self.settings
        return {
            "metric": self.card.metric,
            "metrics": self.metrics,
            "scorer": "xbench.metrics.qa.score_qa",
            "scheme": self.scheme,
            "normalisation_language": ("the context language of each unit" if self.scheme == "mlqa"
                                       else "none: SQuAD v1.1 (English) rules for every language"),
            "n_best": s["n_best"], "max_answer_length": s["max_answer_length"],
            "max_length": s["max_length"], "doc_stride": s["doc_stride"], "max_query_length": s["max_query_length"],
            "units": "a language (question and context in it) or c=<context>,q=<question>",
            "average": ("mean over the G-XLT (off-diagonal) cells" if self.question_langs else "mean over the units")
                       + (f", leaving out {', '.join(self.card.raw['average_excludes'])}"
                          if self.card.raw.get("average_excludes") else ""),
            "training_data": self.training_data,
        }

    # ------------------------------------------------------------------ data

    def _split_spec(self, split: str) -> dict[str, Any]:
        splits = self.card.data["splits"]
        if split not in splits:
            raise XbenchError(f"task '{self.card.name}' has no split '{split}'; valid splits: {', '.join(splits)}")
        return splits[split]

    supports_code_switch = True

    def code_switch(self, examples: list[Any], originals: list[Any], p_switch: float, seed: int) -> list[Any]:
        # Only the question: the answer span lives in the context, whose English offsets are not known.
        from xbench.data.codeswitch import code_switch_questions

        return code_switch_questions(examples, originals, p_switch, seed)

    def load(self, lang: str, split: str, data_dir: str | Path | None, *, for_eval: bool) -> Split:
        spec = self._split_spec(split)
        source_name, source_split = spec["source"], spec["split"]
        source = self.card.data["sources"][source_name]
        context, question = parse_unit(lang)
        for which in dict.fromkeys((context, question)):
            if which not in self.card.languages or which not in source.get("languages", self.card.languages):
                raise XbenchError(f"task '{self.card.name}': split '{split}' ({source_name}) has no language "
                                  f"'{which}'; it has {', '.join(source.get('languages', self.card.languages))}")
        if context != question and not _has_question_slot(source):
            raise XbenchError(f"task '{self.card.name}': {source_name} has no questions in another language "
                              f"than the context ({lang})")
        what = f"{self.card.name} {lang}/{split} ({source_name}, split {source_split})"
        examples, prov = _load_source(source, source_split, context, question, data_dir, what)
        if for_eval and prov.hash in self._train_hashes:
            raise XbenchError(f"{what}: this is the data the model was trained on, so it cannot be scored "
                              "as held-out evaluation; leave this language out of --langs")
        if not for_eval:
            self._train_hashes.add(prov.hash)
        return Split(lang, split, examples, prov)

    # ------------------------------------------------------------------ features and model

    def training_fingerprint(self, *, with_selection: bool) -> dict[str, Any]:
        # Without model selection, training sees only the windows: MLQA, XQuAD and TyDiQA cards that
        # fine-tune on the same English file share the fine-tuned model. Selection also scores.
        if with_selection:
            return super().training_fingerprint(with_selection=True)
        return {"task_type": self.name, "version": self.version, **self._window_settings()}

    method_input_names = ("question_marker",)

    def set_method_inputs(self, inputs: dict[str, Any]) -> None:
        super().set_method_inputs(inputs)
        self.question_marker = inputs.get("question_marker")

    def _window_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {k: self.settings[k] for k in ("max_length", "doc_stride", "max_query_length")}
        if self.question_marker is not None:  # only then: plain features keep the cache key they always had
            settings["question_marker"] = self.question_marker
        return settings

    def featurize(self, split: Split, tokenizer: Any, *, train: bool) -> Sequence[dict[str, Any]]:
        from xbench.tasktypes.qa_features import prepare_eval_features, prepare_train_features

        settings = self._window_settings()
        # The provenance names the file, not the questions taken from it: a Split cut down to a
        # subset (tests, benchmarks) must not reuse the features of the whole file.
        questions = hash_json([ex.id for ex in split.examples])
        key = self.feature_key(split, tokenizer, train, questions=questions, **settings)
        if not train:
            return cached_features(key, lambda: prepare_eval_features(split.examples, tokenizer, **settings))
        features, stats = cached_features(key, lambda: prepare_train_features(split.examples, tokenizer, **settings))
        record = {"lang": split.lang, "split": split.name, "dataset": self._split_spec(split.name)["source"],
                  "source": split.provenance.source, **stats}
        if record not in self.training_data:
            self.training_data.append(record)
        return features

    def build_model(self, encoder_path: str) -> Any:
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering.from_pretrained(encoder_path)

    def loss(self, model: Any, batch: dict[str, Any], ctx: Any) -> dict[str, Any]:
        import torch

        inputs = {k: v for k, v in batch.items() if k in _MODEL_INPUTS}
        out = model(**inputs)
        ce = torch.nn.functional.cross_entropy
        start = ce(out.start_logits.float(), batch["start_positions"])
        end = ce(out.end_logits.float(), batch["end_positions"])
        return {"span_ce": (start + end) / 2}

    def predict(self, model: Any, split: Split, features: Sequence[dict[str, Any]], tokenizer: Any) -> list[str]:
        """Best answer text per example, in the order of ``split.examples``."""
        import torch

        from xbench.tasktypes.inference import batched_forward
        from xbench.tasktypes.qa_features import postprocess

        device = next(model.parameters()).device
        width = max(len(f["input_ids"]) for f in features)
        # Logits stay on the model's device: post-processing runs batched there, CPU or GPU alike.
        start = torch.full((len(features), width), float("-inf"), device=device)
        end = torch.full((len(features), width), float("-inf"), device=device)
        for idx, out in batched_forward(model, features, self.pad_values(tokenizer), input_keys=_MODEL_INPUTS):
            rows = torch.as_tensor(idx, device=device)
            cols = out.start_logits.shape[1]
            start[rows, :cols] = out.start_logits.float()
            end[rows, :cols] = out.end_logits.float()
        answers = postprocess(split.examples, features, start, end, n_best=self.settings["n_best"],
                              max_answer_length=self.settings["max_answer_length"])
        return [answers[ex.id] for ex in split.examples]

    def score(self, split: Split, predictions: list[str]) -> dict[str, float]:
        from xbench.metrics.qa import score_qa

        if len(predictions) != len(split.examples):
            raise XbenchError(f"{self.card.name} {split.lang}/{split.name}: {len(predictions)} predictions "
                              f"for {len(split.examples)} questions")
        gold = {ex.id: list(ex.answers) for ex in split.examples}
        preds = {ex.id: p for ex, p in zip(split.examples, predictions)}
        s = score_qa(preds, gold, parse_unit(split.lang)[0], self.scheme)
        return {"exact_match": s["exact_match"] / 100.0, "f1": s["f1"] / 100.0, "n": s["n"]}

    def diagnostics(self, split: Split, features: Sequence[dict[str, Any]], predictions: list[str],
                    tokenizer: Any) -> dict[str, Any]:
        """No label set: the most frequent answer string's share, and the share of empty answers."""
        from xbench.tasktypes.diagnostics import majority, unk_rate

        answers = [p.strip() for p in predictions]
        return {**unk_rate(features, tokenizer), **majority(answers, None, None), "kind": "qa",
                "empty_share": round(sum(not a for a in answers) / len(answers), 6) if answers else None}

    def prediction_records(self, split: Split, predictions: list[str]) -> list[dict[str, Any]]:
        return [{"id": ex.id, "pred": p, "gold": list(ex.answers)} for ex, p in zip(split.examples, predictions)]


# ---------------------------------------------------------------------- loading


def _has_question_slot(source: dict[str, Any]) -> bool:
    templates = [layout["path"] for layout in source.get("local") or []]
    templates.append((source.get("hub") or {}).get("name") or "")
    return any("{question}" in t for t in templates)


def _fill(template: str, context: str, question: str) -> str:
    return template.format(context=context, question=question, lang=context)


def _blanked(examples: list[QAExample], path: Path) -> bool:
    """True if every answer is blank; a file with only some blank answers is broken, not blanked."""
    unanswered = [ex.id for ex in examples if not any(a.strip() for a in ex.answers)]
    if unanswered and len(unanswered) < len(examples):
        raise DataFormatError(path, f"{len(unanswered)} of {len(examples)} questions have no non-empty answer "
                                    f"(first: '{unanswered[0]}')", field="answers",
                              expected="at least one non-empty answer per question")
    return bool(unanswered)


def _load_source(source: dict[str, Any], split: str, context: str, question: str,
                 data_dir: str | Path | None, what: str) -> tuple[list[QAExample], Provenance]:
    """Local layouts in card order, then the hub; files with blanked answers are refused."""
    layouts = [layout for layout in source.get("local") or [] if layout["split"] == split]
    duplicate_ids = source.get("duplicate_ids", "error")

    def read_local(i: int, path: Path) -> list[QAExample] | Refused:
        examples = memoised(read_squad, path, require_answers=False, duplicate_ids=duplicate_ids)
        if _blanked(examples, path):
            note = layouts[i].get("note")
            return Refused(f"{path}: its gold answers are blanked, so it cannot be scored or trained on"
                           + (f"; {note}" if note else ""))
        return examples

    hub = source.get("hub")
    hub_split = (hub or {}).get("splits", {}).get(split)
    hub_hint = None
    if hub_split is not None:
        hub_hint = (f"datasets.load_dataset('{hub['path']}', {_fill(hub.get('name') or '', context, question)!r}, "
                    f"split='{hub_split}')")
    return local_then_hub(
        [_fill(layout["path"], context, question) for layout in layouts], read_local,
        (lambda: _from_hub(hub, hub_split, context, question)) if hub_split is not None
        else no_hub("the card names no hub dataset for this split"),
        data_dir=data_dir, what=what, hub_hint=hub_hint,
        local_hint=" or ".join(_fill(layout["path"], context, question) for layout in layouts) or "(no local layout)")


def _from_hub(hub: dict[str, Any], hub_split: str, context: str, question: str) -> tuple[list[QAExample], Provenance]:
    import datasets  # heavy; only on the hub path

    name = _fill(hub.get("name") or "", context, question) or None
    ds = datasets.load_dataset(hub["path"], name, split=hub_split, revision=hub.get("revision"))
    where = f"hub {hub['path']}/{name or ''} split {hub_split}"
    # google/xtreme's tydiqa config holds every language in one split; ids start with the language name.
    prefix = (hub.get("id_prefix") or {}).get(context)
    examples: list[QAExample] = []
    for row in ds:
        if prefix is not None and not row["id"].startswith(prefix + "-"):
            continue
        texts, starts = tuple(row["answers"]["text"]), tuple(int(s) for s in row["answers"]["answer_start"])
        for text, start in zip(texts, starts):
            if row["context"][start:start + len(text)] != text:
                raise DataFormatError(where, f"question '{row['id']}': answer {text!r} is not at offset {start} "
                                             "of the context", field="answers.answer_start")
        examples.append(QAExample(row["id"], row["question"], row["context"], texts, starts, row.get("title") or ""))
    if not examples:
        raise XbenchError(f"{where}: no questions" + (f" with ids starting '{prefix}-'" if prefix else ""))
    seen: set[str] = set()
    for ex in examples:
        if ex.id in seen:
            raise DataFormatError(where, f"question id '{ex.id}' is used more than once", field="id")
        seen.add(ex.id)
        if not any(a.strip() for a in ex.answers):
            raise DataFormatError(where, f"question '{ex.id}' has no non-empty answer", field="answers")
    return examples, Provenance("hub", hub={"path": hub["path"], "name": name, "split": hub_split,
                                            "revision": hub.get("revision"), "id_prefix": prefix,
                                            "fingerprint": ds._fingerprint})
