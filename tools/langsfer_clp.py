"""Run langsfer's CLP-Transfer on saved inputs: the dev-only cross-check of
docs/methods/clp.md, "Testable properties".

Runs with the interpreter of the venv that tools/langsfer_env.sh builds (langsfer 0.1.0 needs
transformers<5 and numpy<2), never in xbench's own environment:

    .xbench_cache/langsfer-venv/bin/python tools/langsfer_clp.py CASE_DIR [CASE_DIR ...]

Each CASE_DIR holds source_emb.npy (|V_s| × d), helper_emb.npy (|V_t| × d_h, the input
embeddings of a tied-embedding helper), source_vocab.json and target_vocab.json (token -> id).
langsfer's result goes to CASE_DIR/langsfer_out.npy. Prints the langsfer version as JSON.
"""
from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
from langsfer.embeddings import TransformersEmbeddings
from langsfer.high_level import clp_transfer
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast


def vocab_tokenizer(vocab: dict[str, int]) -> PreTrainedTokenizerFast:
    # langsfer reads only the vocabulary (get_vocab, token <-> id, len), so a word-level
    # tokenizer over the same mapping is an exact stand-in; it also avoids loading tokenizer
    # files that transformers 5 writes and transformers 4 cannot read.
    unk = min(vocab, key=vocab.get)
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token=unk)))


def run_case(case: Path) -> None:
    source_emb = np.load(case / "source_emb.npy")
    helper_emb = np.load(case / "helper_emb.npy")
    source_tok = vocab_tokenizer(json.loads((case / "source_vocab.json").read_text(encoding="utf-8")))
    target_tok = vocab_tokenizer(json.loads((case / "target_vocab.json").read_text(encoding="utf-8")))
    # What TransformersEmbeddings.from_model_name_or_path builds for a tied helper.
    helper = TransformersEmbeddings(helper_emb, target_tok)
    initializer = clp_transfer(source_tok, source_emb, target_tok, helper)
    np.save(case / "langsfer_out.npy", initializer.initialize(seed=42))


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    for case in argv:
        run_case(Path(case))
    versions = {pkg: version(pkg) for pkg in ("langsfer", "transformers", "numpy", "torch")}
    print(json.dumps(versions))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
