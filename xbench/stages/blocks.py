"""Batch plans for language-model pretraining (docs/methods/README.md, "Shared building blocks").

- `heldout_split`: a fixed share of a pool held out by line hash, so held-out text is the same
  whatever the order or size of the rest of the pool, and no training stage ever sees it.
- `PackedBlocks` / `packed_blocks`: text packed into fixed-length blocks, no padding at all.
- `MultilingualBlocks` / `blocks_by_language`: one language per batch, drawn by the α-smoothed
  `LanguageSampler`.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Literal

from xbench.errors import ConfigError, XbenchError

if TYPE_CHECKING:
    import numpy as np
    import torch

Objective = Literal["mlm", "clm"]

HELDOUT_SALT = "xbench-heldout-v1"


def heldout_split(lines: list[str], share: float, *, salt: str = HELDOUT_SALT) -> tuple[list[str], list[str]]:
    """(train, held-out): a line is held out when the SHA-256 of salt + line falls below `share`."""
    if not 0.0 < share < 1.0:
        raise ConfigError(f"held-out share must be between 0 and 1 (exclusive), got {share}")
    train: list[str] = []
    held: list[str] = []
    limit = share * 2**64
    for line in lines:
        h = int.from_bytes(hashlib.sha256((salt + line).encode("utf-8")).digest()[:8], "big")
        (held if h < limit else train).append(line)
    return train, held


def token_ids(tokenizer: Any, lines: list[str], objective: Objective) -> list[list[int]]:
    """Per-line ids without specials; causal streams end each line with the eos token."""
    ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
    if objective == "clm":
        eos = tokenizer.eos_token_id
        if eos is None:
            raise XbenchError(f"tokenizer '{tokenizer.name_or_path}' has no eos token to separate causal-LM documents")
        ids = [x + [eos] for x in ids]
    return ids


def packed_blocks(tokenizer: Any, lines: list[str], objective: Objective, *, seq_len: int, batch_size: int,
                  seed: int, ids: list[list[int]] | None = None) -> PackedBlocks:
    """MLM: [CLS] block [SEP] with [SEP] between lines; CLM: a plain stream with eos between lines.

    `ids` are `token_ids(tokenizer, lines, objective)` when the caller has them already.
    """
    ids = token_ids(tokenizer, lines, objective) if ids is None else ids
    try:
        if objective == "mlm":
            return PackedBlocks(ids, seq_len=seq_len, batch_size=batch_size, seed=seed,
                                cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id)
        return PackedBlocks(ids, seq_len=seq_len, batch_size=batch_size, seed=seed, cls_id=None, sep_id=None)
    except ValueError as exc:
        raise XbenchError(f"too little text for a pretraining batch ({len(lines)} lines): {exc}") from None


class MultilingualBlocks:
    """One language per batch, drawn with q_i ∝ p_i^α (docs/methods/README.md,
    "Shared building blocks"); blocks of a language in shuffled passes.

    `batches(epoch)` is a pure function of (seed, epoch): the runner's checkpoint stores
    (epoch, position), which therefore pins the sampler's state, and a resumed run draws exactly
    the languages and blocks an uninterrupted run would. An epoch has as many batches as all
    languages' blocks fill; a small language sampled above its share starts another pass of its
    blocks within the epoch, so upsampling repeats text rather than stopping early.
    """

    def __init__(self, blocks: dict[str, np.ndarray], sizes: dict[str, int], *, alpha: float, batch_size: int,
                 seed: int) -> None:
        from xbench.data.sampler import language_probs

        if set(blocks) != set(sizes):
            raise ConfigError(f"languages with blocks ({sorted(blocks)}) and with sizes ({sorted(sizes)}) differ")
        widths = {b.shape[1] for b in blocks.values()}
        if len(widths) != 1:
            raise ConfigError(f"all languages need blocks of one length, got {sorted(widths)}")
        self.blocks, self.sizes, self.alpha, self.batch_size, self.seed = blocks, dict(sizes), alpha, batch_size, seed
        self.languages = list(blocks)
        self.probs = language_probs(self.sizes, alpha)
        self.epoch_batches = max(1, sum(len(b) for b in blocks.values()) // batch_size)

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * next(iter(self.blocks.values())).shape[1]

    def sampler(self, epoch: int) -> Any:
        from xbench.data.sampler import LanguageSampler

        return LanguageSampler(self.sizes, self.alpha, seed=self.seed * 1_000_003 + epoch)

    def batches(self, epoch: int) -> list[tuple[str, list[int]]]:
        import numpy as np

        sampler = self.sampler(epoch)
        order: dict[str, list[int]] = {}
        passes = dict.fromkeys(self.languages, 0)
        out = []
        for _ in range(self.epoch_batches):
            lang = sampler.sample()
            li = self.languages.index(lang)
            pending = order.setdefault(lang, [])
            while len(pending) < self.batch_size:
                rng = np.random.default_rng([self.seed, epoch, li, passes[lang]])
                pending.extend(rng.permutation(len(self.blocks[lang])).tolist())
                passes[lang] += 1
            out.append((lang, pending[: self.batch_size]))
            del pending[: self.batch_size]
        return out

    def collate(self, item: tuple[str, list[int]]) -> dict[str, Any]:
        import torch

        lang, idx = item
        ids = torch.from_numpy(self.blocks[lang][idx])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def drawn(self, steps: int) -> dict[str, int]:
        """How many batches of each language the first `steps` batches hold (single process)."""
        counts = dict.fromkeys(self.languages, 0)
        epoch = 0
        while steps > 0:
            for lang, _ in self.batches(epoch)[:steps]:
                counts[lang] += 1
            steps -= self.epoch_batches
            epoch += 1
        return counts


def blocks_by_language(tokenizer: Any, pools: dict[str, list[str]], objective: Objective, *, seq_len: int,
                       batch_size: int, alpha: float, seed: int) -> MultilingualBlocks:
    """A `MultilingualBlocks` plan whose language sizes are token counts under `tokenizer` (docs/methods/meta.md,
    "Departures from the paper")."""
    blocks, sizes = {}, {}
    for lang, lines in pools.items():
        ids = token_ids(tokenizer, lines, objective)
        sizes[lang] = sum(len(x) for x in ids)
        blocks[lang] = packed_blocks(tokenizer, lines, objective, seq_len=seq_len, batch_size=1, seed=seed,
                                     ids=ids).blocks
    return MultilingualBlocks(blocks, sizes, alpha=alpha, batch_size=batch_size, seed=seed)


class PackedBlocks:
    """A batch plan over text packed into fixed-length blocks: no padding at all.

    Lines are tokenised without specials, concatenated with [SEP] between documents, cut into
    blocks of seq_len - 2 and wrapped as [CLS] block [SEP]. Block order is reshuffled per epoch.
    """

    def __init__(self, token_ids: list[list[int]], *, seq_len: int, batch_size: int, seed: int,
                 cls_id: int | None, sep_id: int | None) -> None:
        import numpy as np

        body = seq_len - (cls_id is not None) - (sep_id is not None)
        stream: list[int] = []
        for ids in token_ids:
            stream.extend(ids)
            if sep_id is not None:
                stream.append(sep_id)
        n_blocks = len(stream) // body
        if n_blocks < batch_size:
            raise ValueError(f"only {n_blocks} blocks of {seq_len} tokens; need at least one batch of {batch_size}")
        arr = np.asarray(stream[: n_blocks * body], dtype=np.int64).reshape(n_blocks, body)
        pre = [np.full((n_blocks, 1), cls_id)] if cls_id is not None else []
        post = [np.full((n_blocks, 1), sep_id)] if sep_id is not None else []
        self.blocks = np.concatenate(pre + [arr] + post, axis=1)
        self.seed, self.batch_size = seed, batch_size

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * self.blocks.shape[1]

    def batches(self, epoch: int) -> list[list[int]]:
        import numpy as np

        order = np.random.default_rng([self.seed, epoch, 7]).permutation(len(self.blocks))
        usable = len(order) - len(order) % self.batch_size
        return [order[i:i + self.batch_size].tolist() for i in range(0, usable, self.batch_size)]

    def collate(self, item: list[int]) -> dict[str, torch.Tensor]:
        import torch

        ids = torch.from_numpy(self.blocks[item])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
