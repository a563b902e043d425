"""Task type: sentence-pair classification (XNLI and its kin). Metric: accuracy."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xbench.data.pair_tsv import check_scorable, load_pair_split
from xbench.tasktypes.base import Split, TaskType, cached_features


class SentencePairClassification(TaskType):
    name = "sentence-pair-classification"
    version = 1

    @property
    def labels(self) -> list[str]:
        return list(self.card.params["labels"])

    @property
    def max_length(self) -> int:
        return int(self.card.params.get("max_length", 128))

    supports_code_switch = True

    def code_switch(self, examples: list[Any], originals: list[Any], p_switch: float, seed: int) -> list[Any]:
        from xbench.data.codeswitch import code_switch_pairs

        return code_switch_pairs(examples, originals, p_switch, seed)

    def load(self, lang: str, split: str, data_dir: str | Path | None, *, for_eval: bool) -> Split:
        examples, prov = load_pair_split(self.card.data, self.card.params, lang, split, data_dir)
        if for_eval:
            check_scorable(examples, self.labels, f"{self.card.name} {lang}/{split}")
        return Split(lang, split, examples, prov)

    def featurize(self, split: Split, tokenizer: Any, *, train: bool) -> Sequence[dict[str, Any]]:
        def build() -> list[dict[str, Any]]:
            enc = tokenizer([e.premise for e in split.examples], [e.hypothesis for e in split.examples],
                            truncation=True, max_length=self.max_length)
            keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
            return [{**{k: enc[k][i] for k in keys}, "labels": e.label} for i, e in enumerate(split.examples)]

        return cached_features(self.feature_key(split, tokenizer, train, max_length=self.max_length), build)

    def build_model(self, encoder_path: str) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(
            encoder_path, num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)), label2id={l: i for i, l in enumerate(self.labels)})

    def loss(self, model: Any, batch: dict[str, Any], ctx: Any) -> dict[str, Any]:
        import torch

        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits
        return {"ce": torch.nn.functional.cross_entropy(logits.float(), labels)}

    def predict(self, model: Any, split: Split, features: Sequence[dict[str, Any]], tokenizer: Any) -> list[int]:
        from xbench.tasktypes.inference import batched_forward

        preds: list[int] = [0] * len(features)
        for idx, out in batched_forward(model, features, self.pad_values(tokenizer)):
            for i, p in zip(idx, out.logits.argmax(-1).tolist()):
                preds[i] = p
        return preds

    def score(self, split: Split, predictions: list[int]) -> dict[str, float]:
        correct = sum(int(p == e.label) for p, e in zip(predictions, split.examples))
        return {"accuracy": correct / len(split.examples), "n": len(split.examples)}

    def predicted_labels(self, split: Split, predictions: list[int]) -> tuple[list[str], list[str], int]:
        return ([self.labels[p] for p in predictions], [self.labels[e.label] for e in split.examples], len(self.labels))

    def prediction_records(self, split: Split, predictions: list[int]) -> list[dict[str, Any]]:
        return [{"index": i, "gold": self.labels[e.label], "pred": self.labels[p]}
                for i, (e, p) in enumerate(zip(split.examples, predictions))]
