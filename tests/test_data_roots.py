"""--data-dir adds to XBENCH_DATA (issue 9, A.6): lookup order, overrides, provenance, source-model identity."""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

from xbench.data.pools import build_pool
from xbench.models.source_models import source_text
from xbench.data.pair_tsv import load_pair_split
from xbench.data.sources import Provenance, data_roots
from xbench.errors import DataNotFoundError
from xbench.cards import get_task

CONLLU = """# sent_id = {i}
# text = {text}
1\t{text}\t_\tNOUN\t_\t_\t0\troot\t_\t_

"""


def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _xnli_rows(word: str, n: int = 6) -> str:
    labels = ["entailment", "neutral", "contradiction"]
    return "".join(f"{word} premise {i}\t{word} hypothesis {i}\t{labels[i % 3]}\n" for i in range(n))


@pytest.fixture
def two_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """`base` (XBENCH_DATA) with en and de XNLI test files; `extra` (--data-dir) overrides de only."""
    base, extra = tmp_path / "base", tmp_path / "extra"
    _write(base, "xnli/test/en.tsv", _xnli_rows("base-en"))
    _write(base, "xnli/test/de.tsv", _xnli_rows("base-de"))
    _write(extra, "xnli/test/de.tsv", _xnli_rows("extra-de", 9))
    monkeypatch.setenv("XBENCH_DATA", str(base))
    return base, extra


def test_data_dir_adds_to_xbench_data_and_overrides_its_files(two_roots):
    base, extra = two_roots
    card = get_task("xnli")
    de, prov_de = load_pair_split(card.data, card.params, "de", "test", str(extra))
    en, prov_en = load_pair_split(card.data, card.params, "en", "test", str(extra))
    assert len(de) == 9 and de[0].premise == "extra-de premise 0"  # --data-dir's file wins
    assert len(en) == 6 and en[0].premise == "base-en premise 0"   # and XBENCH_DATA's other files stay
    assert prov_de.files[0]["root"] == str(extra.resolve()) and prov_de.files[0]["path"] == "xnli/test/de.tsv"
    assert prov_en.files[0]["root"] == str(base.resolve())
    assert len(prov_en.files[0]["sha256"]) == 64


def test_xbench_data_is_a_list_of_roots_searched_in_order(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, "xnli/test/de.tsv", _xnli_rows("a-de"))
    _write(b, "xnli/test/de.tsv", _xnli_rows("b-de"))
    _write(b, "xnli/test/fr.tsv", _xnli_rows("b-fr"))
    monkeypatch.setenv("XBENCH_DATA", os.pathsep.join([str(a), str(b)]))
    roots = data_roots(None)
    assert roots is not None and roots.roots == (a.resolve(), b.resolve())
    assert roots.find("xnli/test/de.tsv") == a.resolve() / "xnli/test/de.tsv"
    assert roots.find("xnli/test/fr.tsv") == b.resolve() / "xnli/test/fr.tsv"
    assert roots.find("xnli/test/zh.tsv") is None
    assert data_roots(str(b)).roots == (b.resolve(), a.resolve())  # --data-dir first; listed once
    monkeypatch.setenv("XBENCH_DATA", str(tmp_path / "missing"))
    with pytest.raises(DataNotFoundError, match="from XBENCH_DATA"):
        data_roots(None)


def test_data_hash_does_not_depend_on_where_the_root_lives(two_roots, tmp_path, monkeypatch):
    base, _ = two_roots
    card = get_task("xnli")
    _, here = load_pair_split(card.data, card.params, "en", "test", None)
    moved = tmp_path / "moved"
    shutil.copytree(base, moved)
    monkeypatch.setenv("XBENCH_DATA", str(moved))
    _, there = load_pair_split(card.data, card.params, "en", "test", None)
    assert here.files[0]["root"] != there.files[0]["root"] and here.hash == there.hash
    (moved / "xnli/test/en.tsv").write_text(_xnli_rows("changed"), encoding="utf-8")
    _, changed = load_pair_split(card.data, card.params, "en", "test", None)
    assert changed.hash != here.hash
    assert isinstance(changed, Provenance)


def test_a_treebank_under_data_dir_overrides_one_split_and_keeps_the_others(tmp_path, monkeypatch):
    base, extra = tmp_path / "base", tmp_path / "extra"
    tb = "ud/UD_English-EWT"
    _write(base, f"{tb}/en_ewt-ud-train.conllu", CONLLU.format(i=1, text="basetrain"))
    _write(base, f"{tb}/en_ewt-ud-test.conllu", CONLLU.format(i=1, text="basetest"))
    _write(extra, f"{tb}/en_ewt-ud-test.conllu", CONLLU.format(i=1, text="extratest"))
    monkeypatch.setenv("XBENCH_DATA", str(base))
    tt = get_task("ud").task_type_impl({})
    test_path, _, test_root = tt.find_file("en", "test", str(extra))
    train_path, _, train_root = tt.find_file("en", "train", str(extra))
    assert (test_root, train_root) == (extra.resolve(), base.resolve())
    assert "extratest" in test_path.read_text() and "basetrain" in train_path.read_text()


def _english_root(root: Path, sentences: list[str]) -> Path:
    _write(root, "ud/UD_English-EWT/en_ewt-ud-train.conllu",
           "".join(CONLLU.format(i=i, text=s) for i, s in enumerate(sentences)))
    return root


def test_pool_reads_every_root_and_records_each_file_with_its_root(tmp_path, monkeypatch):
    base = _english_root(tmp_path / "base", ["Dogs bark.", "Cats sleep."])
    extra = tmp_path / "extra"
    _write(extra, "xnli/dev/en.tsv", "A man walks.\tA person moves.\tentailment\n")
    monkeypatch.setenv("XBENCH_DATA", str(base))
    pool = build_pool("en", str(extra))
    assert {"Dogs bark.", "A man walks."} <= set(pool.lines)
    assert {(f["path"], f["root"]) for f in pool.files} == {
        ("ud/UD_English-EWT/en_ewt-ud-train.conllu", str(base.resolve())), ("xnli/dev/en.tsv", str(extra.resolve()))}
    assert all("root" not in f for f in pool.manifest()["files"])  # cache keys do not move with the data


def test_a_source_model_built_from_other_text_has_another_identity(tmp_path, monkeypatch):
    monkeypatch.delenv("XBENCH_DATA", raising=False)
    one = source_text("xbench/tiny-en-bert", str(_english_root(tmp_path / "one", ["Dogs bark.", "Cats sleep."])))
    same = source_text("xbench/tiny-en-bert", str(_english_root(tmp_path / "same", ["Dogs bark.", "Cats sleep."])))
    other = source_text("xbench/tiny-en-bert", str(_english_root(tmp_path / "other", ["Dogs bark.", "Birds sing."])))
    assert one is not None and same is not None and other is not None
    assert one["hash"] == same["hash"] != other["hash"]  # the text decides, not where it lives
    assert [f["path"] for f in one["files"]] == ["ud/UD_English-EWT/en_ewt-ud-train.conllu"]
    assert one["files"][0]["root"] == str((tmp_path / "one").resolve()) and len(one["files"][0]["sha256"]) == 64
    # --data-dir adds English text to XBENCH_DATA's, so it changes the identity too.
    monkeypatch.setenv("XBENCH_DATA", str(tmp_path / "one"))
    extra = tmp_path / "extra"
    _write(extra, "xnli/dev/en.tsv", "A man walks.\tA person moves.\tentailment\n")
    assert source_text("xbench/tiny-en-bert", str(extra))["hash"] != one["hash"]
    assert source_text("some/hub-model", None) is None


def test_missing_english_text_says_why_english_is_needed(tmp_path, monkeypatch):
    monkeypatch.delenv("XBENCH_DATA", raising=False)
    root = tmp_path / "de-only"
    _write(root, "xnli/dev/de.tsv", "Ein Mann.\tEine Person.\tentailment\n")
    with pytest.raises(DataNotFoundError) as err:
        source_text("xbench/tiny-en-bert", str(root))
    msg = str(err.value)
    assert "xbench/tiny-en-bert is built on this machine from the 'en' text" in msg
    assert "smoke profile's source model" in msg and "--model" in msg
    for looked_for in ("ud/UD_English-EWT/*-ud-train.conllu", "xnli/dev/en.tsv", "xquad/xquad.en.json"):
        assert looked_for in msg


def test_tiny_source_model_records_its_vocabulary_and_is_keyed_by_its_text(tmp_path, monkeypatch):
    """A miniature of the smoke source model: vocabulary bound and alphabet in its stage record, and
    other text gives another cache entry (the cache key holds the pool's files and hashes)."""
    from xbench.models import source_models

    monkeypatch.delenv("XBENCH_DATA", raising=False)
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    spec = {"lang": "en", "vocab_size": 40, "limit_alphabet": 12,
            "config": {"model_type": "bert", "num_hidden_layers": 1, "hidden_size": 8, "num_attention_heads": 1,
                       "intermediate_size": 8, "max_position_embeddings": 64},
            "pretrain": {"lr": 1e-3, "batch_size": 4, "seq_len": 32, "max_steps": 2, "warmup_steps": 0,
                         "weight_decay": 0.0, "seed": 0}}
    monkeypatch.setitem(source_models.TINY_MODELS, "xbench/tiny-test-bert", spec)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma"]
    one = _english_root(tmp_path / "one", [" ".join(3 * (words[i:] + words[:i])) + " 猫狗鱼鸟" for i in range(10)])
    other = _english_root(tmp_path / "other", [" ".join(3 * (words[i:] + words[:i])) + " 马牛羊" for i in range(10)])
    a = source_models.resolve_source_model("xbench/tiny-test-bert", str(one))
    b = source_models.resolve_source_model("xbench/tiny-test-bert", str(other))
    assert a.path != b.path
    record = a.stages[0]["extra"]["tokenizer"]
    assert record["vocab_size"] <= 40 and record["alphabet_size"] <= 12 and record["limit_alphabet"] == 12
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(a.path)) == record["vocab_size"]


def test_a_treebank_file_under_data_dir_replaces_the_one_below_whatever_its_compression(tmp_path, monkeypatch):
    base = _english_root(tmp_path / "base", ["Base sentence."])
    extra = tmp_path / "extra"
    path = extra / "ud/UD_English-EWT/en_ewt-ud-train.conllu.gz"  # base has the plain .conllu
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(CONLLU.format(i=1, text="Extra sentence."))
    monkeypatch.setenv("XBENCH_DATA", str(base))
    pool = build_pool("en", str(extra), include_xquad=False)
    assert pool.lines == ["Extra sentence."]
    assert [f["root"] for f in pool.files] == [str(extra.resolve())]


def test_a_data_dir_file_wins_over_another_layout_below_it(tmp_path, monkeypatch):
    # The cards list alternatives (PAN-X `dev-de.tsv.gz` before `dev-de.tsv`; XNLI per-language TSVs
    # before the official single file): a file under --data-dir must win over every alternative in
    # XBENCH_DATA, not only over the same file name.
    from xbench.data.textfiles import clear_memo

    clear_memo()
    base, extra = tmp_path / "base", tmp_path / "extra"
    rows = "John\tB-PER\nleft\tO\n\n"
    (base / "panx").mkdir(parents=True)
    with gzip.open(base / "panx" / "dev-de.tsv.gz", "wt", encoding="utf-8") as f:
        f.write(rows * 5)
    _write(extra, "panx/dev-de.tsv", rows * 2)
    official = "language\tgold_label\tsentence1\tsentence2\n" + "".join(
        f"de\tneutral\tbase {i}\tbase h {i}\n" for i in range(4))
    _write(base, "XNLI-1.0/xnli.test.tsv", official)
    _write(extra, "xnli/test/de.tsv", _xnli_rows("extra-de", 9))
    monkeypatch.setenv("XBENCH_DATA", str(base))
    split = get_task("panx").task_type_impl().load("de", "dev", str(extra), for_eval=True)
    assert len(split.examples) == 2 and split.provenance.files[0]["root"] == str(extra.resolve())
    card = get_task("xnli")
    de, prov = load_pair_split(card.data, card.params, "de", "test", str(extra))
    assert len(de) == 9 and prov.files[0]["root"] == str(extra.resolve())
    # With one root the card's order of preference is unchanged.
    assert [i for i, _ in data_roots(None).ordered(["panx/dev-de.tsv", "panx/dev-de.tsv.gz"])] == [1]


def test_a_multilingual_tiny_model_learns_one_vocabulary_over_its_pools(data_root, tmp_path, monkeypatch):
    """tiny-multi-bert's path in miniature on the real pools: one WordPiece over en, de and zh text, batches
    drawn one language at a time, and every pool's files in the model's source text."""
    from transformers import AutoTokenizer

    from xbench.models import source_models

    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    spec = {**source_models.TINY_MODELS["xbench/tiny-multi-bert"],
            "pretrain": {"lr": 1e-3, "batch_size": 4, "seq_len": 32, "max_steps": 3, "warmup_steps": 0,
                         "weight_decay": 0.0, "seed": 0}}
    monkeypatch.setitem(source_models.TINY_MODELS, "xbench/tiny-multi-test", spec)
    model = source_models.resolve_source_model("xbench/tiny-multi-test", str(data_root))
    tok = AutoTokenizer.from_pretrained(model.path)
    for text in ("The house is small.", "Das Haus ist klein und schön.", "这个房子很小。"):
        pieces = tok.tokenize(text)
        assert pieces and tok.unk_token not in pieces, (text, pieces)
    text = source_models.source_text("xbench/tiny-multi-test", str(data_root))
    assert text["langs"] == ["en", "de", "zh"]
    pools = model.manifest["pool"]
    assert [p["lang"] for p in pools] == ["en", "de", "zh"] and all(p["files"] for p in pools)
    assert len(text["files"]) == sum(len(p["files"]) for p in pools)  # every pool's files, each with its hash
    assert model.stages[0]["optimizer_steps"] == 3
