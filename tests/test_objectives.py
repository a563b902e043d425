"""Statistical and structural properties of the MLM and CLM objectives (xbench/objectives/mlm.py).

The rates are checked on >= 20,000 eligible positions against their binomial expectation with a
tolerance of TOL_SIGMA standard deviations: the draws are seeded, so the tests are deterministic,
but the bounds are derived from the distribution rather than snapshotted from one draw. At
5 sigma an honest implementation fails with probability ~6e-7 per check for any seed, while
selecting 20% instead of 15% is ~100 sigma away on these sizes.
"""
from __future__ import annotations

import math

import pytest
import torch

from xbench.objectives.clm import CLMObjective
from xbench.objectives.mlm import MLMObjective, mask_tokens

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIALS = (PAD, UNK, CLS, SEP, MASK)
VOCAB = 1000
FREQUENT = 7  # an ordinary token made common on purpose, for never_mask
TOL_SIGMA = 5.0


def _batch(rows: int = 256, width: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] w1 .. wn [SEP] [PAD]..., n varying per row, ~5% of words FREQUENT and a few [UNK] inside."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((rows, width), PAD, dtype=torch.long)
    attn = torch.zeros((rows, width), dtype=torch.long)
    for r in range(rows):
        n = int(torch.randint(width // 3, width - 1, (1,), generator=g))  # words; leaves room for CLS/SEP
        words = torch.randint(len(SPECIALS), VOCAB, (n,), generator=g)
        u = torch.rand(n, generator=g)
        words[u < 0.05] = FREQUENT
        words[(u >= 0.05) & (u < 0.06)] = UNK
        ids[r, 0], ids[r, 1:n + 1], ids[r, n + 1] = CLS, words, SEP
        attn[r, : n + 2] = 1
    return ids, attn


def _objective(**kw) -> MLMObjective:
    return MLMObjective(mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIALS, **kw)


def _within(count: int, n: int, p: float) -> tuple[bool, str]:
    sd = math.sqrt(n * p * (1 - p))
    ok = abs(count - n * p) <= TOL_SIGMA * sd
    return ok, f"{count}/{n} = {count / n:.4f}, expected {p:.4f} ± {TOL_SIGMA} sd ({TOL_SIGMA * sd / n:.4f})"


def _mask(ids: torch.Tensor, attn: torch.Tensor, seed: int = 1, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    obj = _objective(**{k: v for k, v in kw.items() if k == "never_mask"})
    special = obj.special_mask(ids, attn)
    return mask_tokens(ids, special_mask=special, mask_id=MASK, vocab_size=VOCAB,
                       generator=torch.Generator().manual_seed(seed), **kw)


def test_special_mask_covers_special_ids_and_padding():
    ids, attn = _batch(rows=8)
    special = _objective().special_mask(ids, attn)
    expected = (attn == 0) | torch.isin(ids, torch.tensor(SPECIALS))
    assert torch.equal(special, expected)
    # Padding counts as special through the attention mask even where its id is an ordinary token.
    ids[attn == 0] = 42
    assert torch.equal(_objective().special_mask(ids, attn), expected)


def test_mlm_selects_15_percent_of_eligible_positions():
    ids, attn = _batch()
    eligible = (attn == 1) & ~torch.isin(ids, torch.tensor(SPECIALS))
    n = int(eligible.sum())
    assert n >= 20_000
    _, labels = _mask(ids, attn)
    selected = labels != -100
    ok, msg = _within(int(selected.sum()), n, 0.15)
    assert ok, msg


def test_mlm_never_selects_specials_or_padding_and_leaves_them_unchanged():
    ids, attn = _batch()
    out, labels = _mask(ids, attn)
    protected = (attn == 0) | torch.isin(ids, torch.tensor(SPECIALS))
    assert int(protected.sum()) > 5_000  # the batch does contain many of them
    assert (labels[protected] == -100).all()
    assert torch.equal(out[protected], ids[protected])


def test_mlm_labels_are_the_original_ids_at_selected_positions_and_minus_100_elsewhere():
    ids, attn = _batch()
    out, labels = _mask(ids, attn)
    selected = labels != -100
    assert torch.equal(labels[selected], ids[selected])
    assert ((labels == -100) | selected).all()
    # Nothing outside the selection is corrupted.
    assert torch.equal(out[~selected], ids[~selected])


def test_mlm_corrupts_selected_positions_80_10_10():
    ids, attn = _batch(rows=512)
    out, labels = _mask(ids, attn)
    selected = labels != -100
    s = int(selected.sum())
    orig, new = ids[selected], out[selected]
    masked = int((new == MASK).sum())
    kept = int((new == orig).sum())
    replaced = s - masked - kept
    # A random replacement is uniform over the vocabulary, so it lands on [MASK] or on the original
    # token with probability 1/VOCAB each: those show up as masked / kept.
    p_mask = 0.8 + 0.1 / VOCAB
    p_keep = 0.1 + 0.1 / VOCAB
    p_random = 0.1 * (1 - 2 / VOCAB)
    for count, p, what in ((masked, p_mask, "[MASK]"), (kept, p_keep, "kept"), (replaced, p_random, "random")):
        ok, msg = _within(count, s, p)
        assert ok, f"{what}: {msg}"
    # Random replacements spread over the vocabulary instead of repeating a few ids.
    rand_ids = new[(new != MASK) & (new != orig)]
    assert len(set(rand_ids.tolist())) > 0.5 * min(len(rand_ids), VOCAB)


def test_never_mask_is_honoured():
    ids, attn = _batch()
    frequent = ids == FREQUENT
    assert int(frequent.sum()) > 1_000
    _, labels = _mask(ids, attn)
    assert int((labels[frequent] != -100).sum()) > 0  # without never_mask the token is selectable
    out, labels = _mask(ids, attn, never_mask=(FREQUENT,))
    assert (labels[frequent] == -100).all()
    assert torch.equal(out[frequent], ids[frequent])
    # The remaining eligible positions are still selected at 15%.
    eligible = (attn == 1) & ~torch.isin(ids, torch.tensor((*SPECIALS, FREQUENT)))
    ok, msg = _within(int((labels != -100).sum()), int(eligible.sum()), 0.15)
    assert ok, msg


def test_mlm_masking_is_a_function_of_the_generator():
    ids, attn = _batch(rows=16)
    a, b = _mask(ids, attn, seed=5), _mask(ids, attn, seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = _mask(ids, attn, seed=6)
    assert not torch.equal(a[1], c[1])
    before = torch.get_rng_state()
    _mask(ids, attn, seed=5)
    assert torch.equal(before, torch.get_rng_state())  # the global RNG is not touched


class _Ctx:
    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)


class _Recorder(torch.nn.Module):
    """Returns fixed logits and remembers what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(3)))
        self.seen: dict[str, torch.Tensor] = {}

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        self.seen = {"input_ids": input_ids, "attention_mask": attention_mask}

        class Out:
            logits = self.table[input_ids]

        return Out()


def test_mlm_objective_loss_is_the_mean_over_selected_positions_only():
    ids, attn = _batch(rows=64)
    model = _Recorder()
    loss = _objective()(model, {"input_ids": ids, "attention_mask": attn}, _Ctx(9))["mlm"]
    corrupted, labels = _mask(ids, attn, seed=9)  # the same draws the objective made
    assert torch.equal(model.seen["input_ids"], corrupted)
    logp = torch.log_softmax(model.table[corrupted], -1)
    picked = [-logp[r, c, labels[r, c]] for r, c in (labels != -100).nonzero().tolist()]
    assert loss.item() == pytest.approx(torch.stack(picked).mean().item(), rel=1e-5)


def test_clm_loss_ignores_padding():
    ids, attn = _batch(rows=32)
    ids[attn == 0] = 17  # padding with an ordinary id: a loss that counted it would change
    model = _Recorder()
    loss = CLMObjective()(model, {"input_ids": ids, "attention_mask": attn}, _Ctx(0))["clm"]
    # Independently: position t predicts token t+1, for every t+1 that is a real token.
    logp = torch.log_softmax(model.table[ids], -1)
    terms = [-logp[r, t, ids[r, t + 1]] for r in range(ids.size(0)) for t in range(ids.size(1) - 1)
             if attn[r, t + 1] == 1]
    assert len(terms) == int(attn[:, 1:].sum())
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
    with_padding = torch.stack([-logp[r, t, ids[r, t + 1]] for r in range(ids.size(0))
                                for t in range(ids.size(1) - 1)]).mean().item()
    assert abs(with_padding - loss.item()) > 1e-3  # the check above can tell the two apart


def test_clm_without_attention_mask_scores_every_next_token():
    ids, _ = _batch(rows=4)
    model = _Recorder()
    loss = CLMObjective()(model, {"input_ids": ids}, _Ctx(0))["clm"]
    logp = torch.log_softmax(model.table[ids], -1)
    expected = -logp[:, :-1].gather(-1, ids[:, 1:, None]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
