"""PPA's alignment stage (xbench/stages/ppa.py) on a tiny BERT: random input shuffling (spec property 6),
the losses, the token count and the state the runner keeps."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from xbench.stages.ppa import PairPlan, PPAArgs, count_ppa_tokens, train_ppa

SPECIAL = {"cls_id": 2, "sep_id": 3, "pad_id": 0}


def _pairs(n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        en = torch.randint(5, 40, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
        out.append((en, [t + 10 for t in en][::-1]))  # a "translation": a fixed relabelling, reordered
    return out


@pytest.mark.parametrize("p, low, high", [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.5, 0.48, 0.52)])
def test_random_input_shuffling_puts_english_first_with_probability_p_shuffle(p, low, high) -> None:
    pairs = _pairs(10_000)
    plan = PairPlan(pairs, batch_size=500, p_shuffle=p, seed=3, max_len=16, **SPECIAL)
    en_query = torch.cat([plan.collate(b)["en_is_query"] for b in plan.batches(0)]).float().mean().item()
    assert low <= en_query <= high
    batch = plan.collate(plan.batches(0)[0])
    for row, (i, en_first) in enumerate(plan.batches(0)[0][:20]):
        en, xx = pairs[i]
        first = en if en_first else xx
        assert batch["query_input_ids"][row, :len(first) + 2].tolist() == [2, *first, 3]
        assert batch["input_ids"][row, 1:len(first) + 1].tolist() == first  # TLM puts the query side first


def _setup(folder: Path, steps: int):
    """A tiny MLM BERT, its tokenizer, 20 pairs and the stage settings; the same on every call."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, 60)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(str(folder / "vocab.txt"))
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=32, max_position_embeddings=64))
    args = PPAArgs(lr=1e-3, batch_size=4, max_steps=steps, queue_size=8, momentum=0.9, tau=0.05, seed=1, max_len=16)
    plan = PairPlan(_pairs(20), batch_size=4, p_shuffle=0.5, seed=1, max_len=16, **SPECIAL)
    return model, tok, args, plan


def run_ppa(folder: str, steps: int = 12, resume: bool = True):
    """The stage on the tiny setup (also run in a subprocess by the kill-and-resume test)."""
    model, tok, args, plan = _setup(Path(folder), steps)
    return train_ppa(model, plan, tok, args, Path(folder) / "run", name="ppa test", resume=resume)


def test_a_killed_stage_resumes_to_the_same_losses_queue_and_key_encoder(tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    full, full_parts = run_ppa(str(tmp_path / "full"))
    env = {**os.environ, "XBENCH_TEST_KILL_AT_STEP": "7", "PYTHONPATH": str(repo)}
    code = "import sys; from tests.test_ppa_stage import run_ppa; run_ppa(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "killed")], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    saved = torch.load(next((tmp_path / "killed" / "run" / "checkpoints").glob("step-6")) / "extra.pt",
                       weights_only=True)
    assert set(saved) == {"key_queue", "momentum_encoder", "loss_parts"} and saved["key_queue"]["ptr"] == 6 * 4 % 8
    resumed, parts = run_ppa(str(tmp_path / "killed"))
    assert len(resumed.losses) == 12
    assert max(abs(a - b) for a, b in zip(resumed.losses, full.losses)) < 1e-6
    assert all(max(abs(a - b) for a, b in zip(parts[k], full_parts[k])) < 1e-6 for k in ("sent", "tlm"))


def test_the_stage_trains_both_losses_and_counts_the_passes_with_gradients(tmp_path) -> None:
    model, tok, args, plan = _setup(tmp_path, 8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fit, parts = train_ppa(model, plan, tok, args, tmp_path / "run", name="ppa test")
    assert len(parts["sent"]) == len(parts["tlm"]) == 8
    assert all(math.isfinite(x) for x in parts["sent"] + parts["tlm"])
    assert fit.losses[0] == pytest.approx(parts["sent"][0] + parts["tlm"][0], rel=1e-5)  # L_sent + 1.0 * L_TLM
    batches = [*plan.batches(0), *plan.batches(1)][:8]  # 5 batches an epoch: the stage ran into the second
    assert fit.record.tokens_seen == sum(count_ppa_tokens(plan.collate(b)) for b in batches)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
