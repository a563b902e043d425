"""Word -> subword encoding and word pooling."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xbench.vocab.words import encode_words, pool_words
from xbench.data.conllu_io import read_conllu
from xbench.data.panx import read_panx

CORPUS = [
    "the cat sat on the mat while the dog played in the park",
    "Hamburg is a city in Germany and Berlin is its capital",
    "the players were playing and the player played well",
    "北京 是 中国 的 首都 。 上海 是 城市 。",
    "Anton Wilhelm von Zuccalmaglio wrote songs",
]


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS * 5, trainers.WordPieceTrainer(vocab_size=150, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def _pieces(tokenizer, word: str) -> list[int]:
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    return ids or [tokenizer.unk_token_id]


def _check_alignment(tokenizer, words_batch: list[list[str]], enc: dict) -> None:
    """Every kept word's pieces are exactly its standalone pieces, contiguous, in order."""
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    for b, words in enumerate(words_batch):
        n = enc["n_words"][b]
        ids = enc["input_ids"][b][enc["attention_mask"][b].bool()].tolist()
        widx = enc["word_index"][b][enc["attention_mask"][b].bool()].tolist()
        assert ids[0] == cls_id and ids[-1] == sep_id and widx[0] == widx[-1] == -1
        expected_ids, expected_widx = [], []
        for w, word in enumerate(words[:n]):
            p = _pieces(tokenizer, word)
            expected_ids += p
            expected_widx += [w] * len(p)
        assert ids[1:-1] == expected_ids
        assert widx[1:-1] == expected_widx
        first = enc["first_subword"][b, :n].tolist()
        assert first == [widx.index(w) for w in range(n)]
        assert enc["word_mask"][b].tolist() == [True] * n + [False] * (enc["word_mask"].shape[1] - n)


def test_multi_piece_words(tokenizer) -> None:
    words = [["the", "spaceship", "played"], ["Zuccalmaglio", "Germany", "unplayable", "xylophone", "cat"]]
    assert len(tokenizer.tokenize("spaceship")) > 1  # not in the corpus, so it must be split
    assert tokenizer.tokenize("xylophone") == ["[UNK]"]  # "x" never seen: one [UNK] piece
    enc = encode_words(words, tokenizer, max_length=64)
    assert enc["n_words"] == [3, 5] and enc["n_truncated"] == [0, 0] and enc["n_unk_words"] == [0, 0]
    assert "token_type_ids" in enc and int(enc["token_type_ids"].abs().sum()) == 0
    assert enc["input_ids"].shape == enc["word_index"].shape
    # padding positions of the shorter row are -1 and masked out
    short = int(enc["attention_mask"][0].sum())
    assert (enc["word_index"][0, short:] == -1).all()
    _check_alignment(tokenizer, words, enc)


def test_word_with_spaces_stays_one_word(tokenizer) -> None:
    # Vietnamese-VTB words contain spaces ("Hà Nội"): pieces of both halves belong to one word.
    enc = encode_words([["Hà Nội", "is", "a", "city"]], tokenizer, max_length=32)
    assert enc["n_words"] == [4]
    widx = enc["word_index"][0].tolist()
    assert widx.count(0) >= 2
    assert enc["first_subword"][0].tolist()[:2] == [1, 1 + widx.count(0)]


def test_unencodable_word_maps_to_unk(tokenizer) -> None:
    # BERT's normaliser deletes format characters: U+200B alone encodes to zero pieces.
    assert tokenizer("\u200b", add_special_tokens=False)["input_ids"] == []
    words = [["the", "\u200b", "cat", "\u200e"], ["the", "cat"]]
    enc = encode_words(words, tokenizer, max_length=32)
    assert enc["n_words"] == [4, 2] and enc["n_unk_words"] == [2, 0]
    ids = enc["input_ids"][0].tolist()
    first = enc["first_subword"][0].tolist()
    assert ids[first[1]] == tokenizer.unk_token_id and ids[first[3]] == tokenizer.unk_token_id
    _check_alignment(tokenizer, words, enc)
    assert words[0][1] == "\u200b"  # the caller's lists are not modified


def test_truncation_keeps_whole_words_and_reports(tokenizer) -> None:
    per_word = len(tokenizer.tokenize("spaceship"))
    words = [["spaceship"] * 10, ["cat"] * 3]
    max_length = 2 + 3 * per_word + 1  # room for 3 whole words and one spare piece
    enc = encode_words(words, tokenizer, max_length=max_length)
    assert enc["n_words"] == [3, 3] and enc["n_truncated"] == [7, 0]
    assert enc["input_ids"].shape[1] <= max_length
    _check_alignment(tokenizer, words, enc)
    with pytest.raises(Exception, match="max_length"):
        encode_words(words, tokenizer, max_length=2)


def test_cjk_words_from_treebank(tokenizer, data_root: Path) -> None:
    sents = read_conllu(data_root / "ud/UD_Chinese-GSDSimp/zh_gsdsimp-ud-dev.conllu.gz")[:8]
    words = [s.words for s in sents]
    enc = encode_words(words, tokenizer, max_length=512)
    assert enc["n_words"] == [len(w) for w in words] and sum(enc["n_truncated"]) == 0
    _check_alignment(tokenizer, words, enc)
    # BERT normalisation splits CJK ideographs, so a two-character word gives two pieces.
    def cjk(word: str) -> bool:
        return len(word) == 2 and all("\u4e00" <= c <= "\u9fff" for c in word)

    b, w = next((b, w) for b, ws in enumerate(words) for w, x in enumerate(ws) if cjk(x))
    assert (enc["word_index"][b] == w).sum() == 2


def test_zero_width_token_from_panx(tokenizer, data_root: Path) -> None:
    sents = read_panx(data_root / "panx/dev-zh.tsv.gz")
    tokens = next(toks for toks, _ in sents if "\u200b" in toks)
    enc = encode_words([tokens], tokenizer, max_length=512)
    assert enc["n_words"] == [len(tokens)] and enc["n_unk_words"][0] >= 1
    _check_alignment(tokenizer, [tokens], enc)


def test_pool_first_and_mean_by_hand() -> None:
    hidden = torch.arange(2 * 9 * 2, dtype=torch.float32).reshape(2, 9, 2)
    word_index = torch.tensor([
        [-1, 0, 0, 1, 2, 2, 2, -1, -1],
        [-1, 0, 1, 1, -1, -1, -1, -1, -1],
    ])
    h = hidden
    first = pool_words(hidden, word_index, 4, "first")
    mean = pool_words(hidden, word_index, 4, "mean")
    z = torch.zeros(2)
    assert torch.equal(first[0], torch.stack([h[0, 1], h[0, 3], h[0, 4], z]))
    assert torch.equal(first[1], torch.stack([h[1, 1], h[1, 2], z, z]))
    expected0 = [(h[0, 1] + h[0, 2]) / 2, h[0, 3], (h[0, 4] + h[0, 5] + h[0, 6]) / 3, z]
    assert torch.allclose(mean[0], torch.stack(expected0))
    assert torch.allclose(mean[1], torch.stack([h[1, 1], (h[1, 2] + h[1, 3]) / 2, z, z]))
    with pytest.raises(ValueError):
        pool_words(hidden, word_index, 4, "last")


def test_pool_matches_first_subword_and_backprops(tokenizer) -> None:
    words = [["the", "spaceship", "played"], ["Zuccalmaglio", "\u200b", "unplayable", "cat", "Hamburg"]]
    enc = encode_words(words, tokenizer, max_length=64)
    w = enc["word_mask"].shape[1]
    hidden = torch.randn(*enc["input_ids"].shape, 8, requires_grad=True)
    pooled = pool_words(hidden, enc["word_index"], w, "first")
    gathered = hidden.gather(1, enc["first_subword"][..., None].expand(-1, -1, 8))
    mask = enc["word_mask"][..., None]
    assert torch.equal(pooled * mask, gathered * mask)
    pooled.sum().backward()
    # gradient reaches exactly the first pieces
    touched = hidden.grad.abs().sum(-1) > 0
    expected = torch.zeros_like(touched)
    for b, n in enumerate(enc["n_words"]):
        expected[b, enc["first_subword"][b, :n]] = True
    assert torch.equal(touched, expected)
