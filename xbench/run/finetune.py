"""The one fine-tuning every method's encoder gets (docs/methods/README.md, "Shaping fine-tuning").

Fine-tuning is the same code for every method, so two rows of a leaderboard differ only in their
encoders, except where a method declares a change through its fine-tuning hooks (a head, an extra
loss term, a transform of the training examples); the change is in the cache key and recorded.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbench.errors import XbenchError
from xbench.run.request import FINETUNE_CODE_VERSION, ResolvedRun, TrainGroup, select_lang

@dataclass
class FineTuned:
    """A fine-tuned model and what its training recorded (from this run or from the cache)."""

    model: Any
    tokenizer: Any
    record: dict[str, Any]
    best: dict[str, Any] | None
    cached: bool = False


def finetune(rr: ResolvedRun, task_type: Any, enc: Any, group: TrainGroup, train_split: str,
              select_split: str | None, seed: int, workdir: Path, data_prov: dict[str, Any],
              hooks: Any = None) -> FineTuned:
    """Fine-tune `enc` on the group's training data, with model selection where the protocol has it.

    With the profile's `cache_finetuned` (default on) the fine-tuned weights are a cache entry keyed
    by everything that determines them: the encoder, the task type and its featurisation settings,
    the training (and selection) data hashes, the fine-tuning settings and the seed. MLQA, XQuAD and
    TyDiQA all fine-tune on the same English data in the same way, so a method's QA runs share one
    fine-tuning per seed, and an interrupted fine-tuning resumes from the entry's checkpoints.

    `hooks` (xbench.methods.base.FinetuneHooks, or None for the plain fine-tuning every baseline
    gets) is what the method changes: the model built, an extra loss, the training examples; what
    it changed is part of the cache key, and the loss parts are recorded.
    """
    import torch
    from transformers import AutoTokenizer

    from xbench.loading import load_pretrained

    req = rr.request
    proto = rr.card.protocol(rr.protocol)
    ft_settings = {**rr.finetune, **task_type.finetune_overrides()}
    tokenizer = load_pretrained(AutoTokenizer, enc.path)
    train = task_type.load(group.train_lang, train_split, req.data_dir, for_eval=False)
    subset = task_type.train_subset(len(train.examples), seed)
    if subset is not None:  # few-shot: the seed's subset, with its own provenance and feature-cache entry
        train = subset_split(train, subset, seed)
    data_prov[f"{group.train_lang}/{train_split}"] = train.provenance.to_dict()
    switch = None
    if proto.code_switch:  # the protocol's augmentation, the same for every method (docs/protocols.md)
        orig = proto.code_switch["originals"]
        originals = task_type.load(orig["lang"], orig["split"], req.data_dir, for_eval=False)
        data_prov[f"{orig['lang']}/{orig['split']} (code-switch originals)"] = originals.provenance.to_dict()
        switch = {"originals": f"{orig['lang']}/{orig['split']}", "originals_hash": originals.provenance.hash,
                  "p_switch": float(proto.code_switch["p_switch"]), "seed": seed}
        train = code_switched_split(train, task_type, originals, switch)
        data_prov[f"{group.train_lang}/{train_split}"] = train.provenance.to_dict()  # with the switch it had
    fit_split = transformed_split(train, hooks, seed) if hooks is not None and hooks.train_transform else train
    feats = task_type.featurize(fit_split, tokenizer, train=True)
    sel = sel_feats = None
    if select_split is not None:
        sel_lang = select_lang(proto.select["lang"], group)
        sel = task_type.load(sel_lang, select_split, req.data_dir, for_eval=True)
        data_prov[f"{sel_lang}/{select_split}"] = sel.provenance.to_dict()
        sel_feats = task_type.featurize(sel, tokenizer, train=False)

    def train_model(out_dir: Path, resume: bool) -> tuple[Any, Any]:
        from xbench.runner.batching import FeaturePlan
        from xbench.runner.trainer import Runner, TrainArgs

        ft = ft_settings
        evaluate = None
        if sel is not None:
            def evaluate(model: Any) -> dict[str, float]:
                return {k: v for k, v in task_type.score(sel, task_type.predict(model, sel, sel_feats, tokenizer)).items()
                        if k != "n"}

        torch.manual_seed(seed)  # the head's initialisation depends on the seed, nothing else does
        model = build_finetune_model(task_type, enc.path, hooks)
        loss_fn, parts = (task_type.loss, None) if hooks is None else hooked_loss(task_type.loss, hooks)
        plan = FeaturePlan(feats, seed=seed, batch_size=ft.get("batch_size"), batch_tokens=ft.get("batch_tokens"),
                           pad_values=task_type.pad_values(tokenizer))
        args = TrainArgs(lr=float(ft["lr"]), max_steps=ft.get("max_steps"), epochs=ft.get("epochs"),
                         warmup_ratio=float(ft.get("warmup_ratio", 0.0)),
                         weight_decay=float(ft.get("weight_decay", 0.0)), grad_accum=int(ft.get("grad_accum", 1)),
                         seed=seed, eval_every=ft.get("eval_every"),
                         checkpoint_every=ft.get("checkpoint_every", ft.get("eval_every")), progress=req.progress)
        fit = Runner(args, out_dir, name=f"fine-tune {group.train_lang} seed {seed}").fit(
            model, plan, loss_fn, evaluate=evaluate, select_metric=rr.card.metric if evaluate else None,
            resume=resume)
        if parts is not None:  # mean of each named loss over the micro-batches this process trained on
            fit.record.extra["loss_parts"] = {k: total / n for k, (total, n) in parts.items()}
        if fit.evals:  # the selection curve, as HF's log_history keeps it: what a budget sweep reads
            fit.record.extra["selection_evals"] = fit.evals
        return model, fit

    if not rr.profile.get("cache_finetuned", True):
        model, fit = train_model(workdir, req.resume)
        return FineTuned(model, tokenizer, fit.record.to_dict(), fit.best)

    from xbench import cache

    key = {"kind": "finetuned", "code_version": FINETUNE_CODE_VERSION, "encoder": enc.key,
           **task_type.training_fingerprint(with_selection=sel is not None), "train": train.provenance.hash,
           "select": sel.provenance.hash if sel is not None else None, "finetune": ft_settings, "seed": seed,
           "select_metric": rr.card.metric if sel is not None else None}
    if hooks is not None:  # only then: a plain fine-tuning keeps the key (and the entry) it always had
        key["method_changes"] = hooks.cache_key()
    if switch is not None:
        key["code_switch"] = switch

    def build(out: Path, work: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        model, fit = train_model(work / "run", True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
        return {"record": fit.record.to_dict(), "best": fit.best}

    def waiting(entry: Path) -> None:
        print(f"waiting for another xbench process that is fine-tuning cache entry {entry.name} "
              f"(same encoder, data, settings and seed); its model is reused when it finishes", file=sys.stderr, flush=True)

    # Decided by the cache under its lock: an entry another run finished while we waited is reused.
    path, built = cache.get_or_build_status("finetuned", key, build, waiting=waiting)
    cached = not built
    manifest = cache.read_entry(path)["manifest"]
    from safetensors.torch import load_file

    torch.manual_seed(seed)
    model = build_finetune_model(task_type, enc.path, hooks)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    model.eval()
    return FineTuned(model, tokenizer, {**manifest["record"], "cache_entry": path.name, "reused": cached},
                     manifest["best"], cached)


def build_finetune_model(task_type: Any, encoder_path: str, hooks: Any) -> Any:
    """The model fine-tuning trains: the method's head where it supplies one, else the task type's."""
    if hooks is not None and hooks.head is not None:
        return hooks.head(encoder_path, task_type)
    return task_type.build_model(encoder_path)


def hooked_loss(task_loss: Any, hooks: Any) -> tuple[Any, dict[str, list[float]]]:
    """The task loss plus the method's extra loss terms, and the running (sum, count) of each named part."""
    parts: dict[str, list[float]] = {}

    def loss(model: Any, batch: dict[str, Any], ctx: Any) -> dict[str, Any]:
        out = dict(task_loss(model, batch, ctx))
        if hooks.extra_loss is not None:
            extra = hooks.extra_loss(model, batch, ctx)
            clash = sorted(set(extra) & set(out))
            if clash:
                raise XbenchError(f"the method's extra fine-tuning loss '{hooks.extra_loss_name}' names its term(s) "
                                  f"{', '.join(clash)} like the task loss; give them other names")
            out.update(extra)
        for name, value in out.items():
            acc = parts.setdefault(name, [0.0, 0])
            acc[0] += float(value.detach())
            acc[1] += 1
        return out

    return loss, parts


def code_switched_split(train: Any, task_type: Any, originals: Any, switch: dict[str, Any]) -> Any:
    """The training split code-switched with its English originals; its provenance says so, so the
    features of the switched examples get their own feature-cache entry."""
    import dataclasses

    examples = task_type.code_switch(list(train.examples), list(originals.examples), switch["p_switch"], switch["seed"])
    selection = {**(train.provenance.selection or {}), "code_switch": switch}
    return dataclasses.replace(train, examples=list(examples),
                               provenance=dataclasses.replace(train.provenance, selection=selection))


def subset_split(train: Any, indices: list[int], seed: int) -> Any:
    """The training split cut down to `indices` (a few-shot sample); its provenance names the subset."""
    import dataclasses

    from xbench.atomic import hash_json

    examples = [train.examples[i] for i in indices]
    selection = {**(train.provenance.selection or {}),
                 "few_shot": {"size": len(indices), "seed": seed, "indices_sha256": hash_json(indices)}}
    return dataclasses.replace(train, examples=examples,
                               provenance=dataclasses.replace(train.provenance, selection=selection))


def transformed_split(train: Any, hooks: Any, seed: int) -> Any:
    """The training split with the method's transform applied; its provenance names the transform, so
    the features of the transformed examples get their own feature-cache entry."""
    import dataclasses

    examples = hooks.train_transform(list(train.examples), seed)
    selection = {**(train.provenance.selection or {}),
                 "method_transform": {"name": hooks.train_transform_name, "seed": seed,
                                      "fingerprint": hooks.fingerprint}}
    return dataclasses.replace(train, examples=list(examples),
                               provenance=dataclasses.replace(train.provenance, selection=selection))
