"""CoNLL-U reading, writing, validation and official scoring."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from xbench.data.conllu_io import read_conllu, universal_deprel, write_conllu
from xbench.errors import DataFormatError, XbenchError
from xbench.metrics.ud import score_conllu


def _conllu(*rows: str) -> str:
    """Rows written with '|' between columns for readability; comments and blanks as is."""
    return "\n".join(r if r.startswith("#") or not r else r.replace(" | ", "\t") for r in rows) + "\n"


# Sentence 1: 8 syntactic words, a multiword token (2-3), a subtyped deprel (obl:tmod).
# Sentence 2: the UD manual's gapping example with an empty node (4.1).
GOLD = _conllu(
    "# sent_id = s1",
    "# text = She didn't buy the car yesterday.",
    "1 | She | she | PRON | PRP | Case=Nom | 4 | nsubj | 4:nsubj | _",
    "2-3 | didn't | _ | _ | _ | _ | _ | _ | _ | _",
    "2 | did | do | AUX | VBD | _ | 4 | aux | 4:aux | _",
    "3 | n't | not | PART | RB | _ | 4 | advmod | 4:advmod | _",
    "4 | buy | buy | VERB | VB | _ | 0 | root | 0:root | _",
    "5 | the | the | DET | DT | _ | 6 | det | 6:det | _",
    "6 | car | car | NOUN | NN | _ | 4 | obj | 4:obj | _",
    "7 | yesterday | yesterday | NOUN | NN | _ | 4 | obl:tmod | 4:obl:tmod | SpaceAfter=No",
    "8 | . | . | PUNCT | . | _ | 4 | punct | 4:punct | _",
    "",
    "# sent_id = s2",
    "# text = Sue likes coffee and Bill tea",
    "1 | Sue | Sue | PROPN | NNP | _ | 2 | nsubj | 2:nsubj|4.1:nsubj | _",
    "2 | likes | like | VERB | VBZ | _ | 0 | root | 0:root | _",
    "3 | coffee | coffee | NOUN | NN | _ | 2 | obj | 2:obj | _",
    "4 | and | and | CCONJ | CC | _ | 5 | cc | 4.1:cc | _",
    "4.1 | likes | like | VERB | VBZ | _ | _ | _ | 2:conj | CopyOf=2",
    "5 | Bill | Bill | PROPN | NNP | _ | 2 | conj | 4.1:nsubj | _",
    "6 | tea | tea | NOUN | NN | _ | 5 | orphan | 4.1:obj | _",
    "",
)

# System analysis of sentence 1 (sentence 2 is copied from gold):
#   word  gold head/deprel   system head/deprel   UAS  LAS  content (gold deprel)?
#   1     4 nsubj            4 nsubj              ok   ok   yes
#   2     4 aux              4 aux                ok   ok   no (aux is functional)
#   3     4 advmod           2 advmod             --   --   yes
#   4     0 root             0 root               ok   ok   yes
#   5     6 det              6 det                ok   ok   no
#   6     4 obj              4 nsubj              ok   --   yes (system nsubj: content too)
#   7     4 obl:tmod         4 obl:npmod          ok   ok   yes (subtypes ignored)
#   8     4 punct            6 punct              --   --   no (punct is neither class)
# Sentence 2: 6 words, all correct; content words by gold deprel: nsubj root obj conj orphan = 5
# (cc is functional), and the system has the same 5.
S1_HEADS = [4, 4, 2, 0, 6, 4, 4, 6]
S1_DEPRELS = ["nsubj", "aux", "advmod", "root", "det", "nsubj", "obl:npmod", "punct"]
N_WORDS = 8 + 6
UAS = 100 * (6 + 6) / N_WORDS
LAS = 100 * (5 + 6) / N_WORDS
# CLAS = F1 over content words: gold 5 + 5, system 5 + 5, correct 3 (words 1, 4, 7) + 5.
CLAS = 100 * 2 * (3 + 5) / ((5 + 5) + (5 + 5))


@pytest.fixture()
def gold_file(tmp_path: Path) -> Path:
    p = tmp_path / "gold.conllu"
    p.write_text(GOLD, encoding="utf-8")
    return p


def test_read_exposes_syntactic_words_only(gold_file: Path) -> None:
    s1, s2 = read_conllu(gold_file)
    assert s1.words == ["She", "did", "n't", "buy", "the", "car", "yesterday", "."]
    assert s1.heads == [4, 4, 4, 0, 6, 4, 4, 4]
    assert s1.deprels[6] == "obl:tmod" and universal_deprel(s1.deprels[6]) == "obl"
    assert len(s2) == 6 and "likes" not in s2.words[2:]  # the empty node is not a word
    assert s1.sent_id == "s1" and s2.metadata["text"] == "Sue likes coffee and Bill tea"
    assert s1.start_line == 1 and s2.start_line == 13
    ids = [t["id"] for t in s1.tokens]
    assert ids[1] == (2, "-", 3) and [t["id"] for t in s2.tokens][4] == (4, ".", 1)


def test_universal_deprel() -> None:
    assert universal_deprel("nsubj:pass") == "nsubj"
    assert universal_deprel("obl:tmod") == "obl"
    assert universal_deprel("root") == "root"


def test_round_trip_is_byte_identical(gold_file: Path, tmp_path: Path) -> None:
    sents = read_conllu(gold_file)
    out = tmp_path / "copy.conllu"
    write_conllu(sents, [s.heads for s in sents], [s.deprels for s in sents], out)
    assert out.read_bytes() == gold_file.read_bytes()
    gz = tmp_path / "copy.conllu.gz"
    write_conllu(sents, [s.heads for s in sents], [s.deprels for s in sents], gz)
    assert gzip.decompress(gz.read_bytes()) == gold_file.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_system_file_and_hand_computed_scores(gold_file: Path, tmp_path: Path) -> None:
    sents = read_conllu(gold_file)
    system = tmp_path / "system.conllu"
    write_conllu(sents, [S1_HEADS, sents[1].heads], [S1_DEPRELS, sents[1].deprels], system)
    text = system.read_text(encoding="utf-8").splitlines()
    gold_lines = GOLD.splitlines()
    # Only HEAD and DEPREL of syntactic word lines may differ.
    assert len(text) == len(gold_lines)
    for g, s in zip(gold_lines, text):
        if g.startswith("#") or not g or "-" in g.split("\t")[0] or "." in g.split("\t")[0]:
            assert s == g
        else:
            gc, sc = g.split("\t"), s.split("\t")
            assert gc[:6] + gc[8:] == sc[:6] + sc[8:]
    assert "3\tn't\tnot\tPART\tRB\t_\t2\tadvmod\t4:advmod\t_" in text

    scores = score_conllu(gold_file, system)
    assert scores["n_words"] == N_WORDS and scores["n_sentences"] == 2
    assert scores["uas"] == pytest.approx(UAS)
    assert scores["las"] == pytest.approx(LAS)
    assert scores["clas"] == pytest.approx(CLAS)
    sc = scores["scoring"]
    assert sc["scorer"].startswith("CoNLL 2018 conll18_ud_eval via udtools ")
    assert sc["deprel_subtypes"] == "ignored" and sc["punctuation"] == "included"
    assert sc["tokenisation"] == "gold"
    assert all(isinstance(scores[k], float) for k in ("uas", "las", "clas"))


def test_write_rejects_wrong_lengths(gold_file: Path, tmp_path: Path) -> None:
    sents = read_conllu(gold_file)
    with pytest.raises(ValueError, match="8 words"):
        write_conllu(sents, [[0], sents[1].heads], [S1_DEPRELS, sents[1].deprels], tmp_path / "x.conllu")
    with pytest.raises(ValueError, match="head 9"):
        write_conllu(sents, [[9] * 8, sents[1].heads], [S1_DEPRELS, sents[1].deprels], tmp_path / "x.conllu")
    assert not (tmp_path / "x.conllu").exists()


def test_scorer_errors_become_xbench_errors(gold_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.conllu"
    other.write_text(GOLD.replace("\tcar\tcar\t", "\tbus\tbus\t"), encoding="utf-8")
    with pytest.raises(XbenchError) as e:
        score_conllu(gold_file, other)
    assert "gold.conllu" in str(e.value) and "other.conllu" in str(e.value)
    with pytest.raises(XbenchError, match="missing.conllu"):
        score_conllu(gold_file, tmp_path / "missing.conllu")
    empty = tmp_path / "empty.conllu"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(XbenchError, match="empty.conllu has no words"):
        score_conllu(empty, gold_file)
    two_roots = tmp_path / "two_roots.conllu"
    two_roots.write_text(GOLD.replace("\t4\tobj\t", "\t0\troot\t", 1), encoding="utf-8")
    with pytest.raises(XbenchError, match="rejected the system file .*two_roots.conllu.*multiple roots"):
        score_conllu(gold_file, two_roots)


S = "1 | A | a | X | _ | _ | 0 | root | _ | _"


@pytest.mark.parametrize(
    ("name", "rows", "line", "needle"),
    [
        ("columns", ["# sent_id = a", S, "2 | B | b | X | _ | _ | 1 | dep | _", ""], 3, "9 tab-separated columns"),
        ("head_range", [S, "2 | B | b | X | _ | _ | 7 | dep | _ | _", ""], 2, "outside the sentence"),
        ("head_negative", [S, "2 | B | b | X | _ | _ | -1 | dep | _ | _", ""], 2, "outside the sentence"),
        ("head_text", [S, "2 | B | b | X | _ | _ | x | dep | _ | _", ""], 2, "HEAD"),
        ("cycle", [S, "", "# sent_id = b", "1 | A | a | X | _ | _ | 0 | root | _ | _",
                   "2 | B | b | X | _ | _ | 3 | dep | _ | _", "3 | C | c | X | _ | _ | 2 | dep | _ | _", ""],
         5, "cycle among words 2 -> 3"),
        ("id_order", [S, "3 | B | b | X | _ | _ | 1 | dep | _ | _", ""], 2, "out of order"),
        ("id_start", ["2 | A | a | X | _ | _ | 0 | root | _ | _", ""], 1, "out of order"),
        ("no_root", ["1 | A | a | X | _ | _ | 2 | dep | _ | _", "2 | B | b | X | _ | _ | 1 | dep | _ | _", ""],
         1, "no root"),
        ("two_roots", [S, "2 | B | b | X | _ | _ | 0 | root | _ | _", ""], 2, "2 roots"),
        ("mwt_range", [S, "3-4 | BC | _ | _ | _ | _ | _ | _ | _ | _", ""], 2, "multiword token"),
        ("whitespace", [S, "   ", S.replace("1 |", "2 |", 1), ""], 2, "whitespace-only"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path: Path, name: str, rows: list[str], line: int, needle: str) -> None:
    p = tmp_path / f"bad_{name}.conllu"
    p.write_text(_conllu(*rows), encoding="utf-8")
    with pytest.raises(DataFormatError) as e:
        read_conllu(p)
    msg = str(e.value)
    assert f"{p}, line {line}:" in msg, msg
    assert needle in msg, msg
    assert e.value.line == line


def test_empty_file(tmp_path: Path) -> None:
    for name, content in (("empty.conllu", ""), ("blank.conllu", "\n\n"), ("empty.conllu.gz", None)):
        p = tmp_path / name
        if content is None:
            p.write_bytes(gzip.compress(b""))
        else:
            p.write_text(content, encoding="utf-8")
        with pytest.raises(DataFormatError, match="no sentences") as e:
            read_conllu(p)
        assert str(p) in str(e.value)


def test_gz_errors_name_the_gz_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.conllu.gz"
    p.write_bytes(gzip.compress(_conllu(S, "2 | B | b | X | _ | _ | 5 | dep | _ | _", "").encode()))
    with pytest.raises(DataFormatError, match=r"bad\.conllu\.gz, line 2:"):
        read_conllu(p)


def test_undecodable_and_corrupt_files(tmp_path: Path) -> None:
    p = tmp_path / "latin1.conllu"
    p.write_bytes(_conllu(S, "2 | Bär | b | X | _ | _ | 1 | dep | _ | _", "").encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin1\.conllu, line 2: not valid UTF-8"):
        read_conllu(p)
    z = tmp_path / "cut.conllu.gz"
    z.write_bytes(gzip.compress(GOLD.encode())[:-20])
    with pytest.raises(DataFormatError, match=r"cut\.conllu\.gz: corrupt or truncated gzip"):
        read_conllu(z)
    with pytest.raises(XbenchError, match="file not found"):
        read_conllu(tmp_path / "nope.conllu")


# ---- real data (UD 2.16 under XBENCH_DATA) ----

def test_real_en_ewt_test(data_root: Path, tmp_path: Path) -> None:
    path = data_root / "ud/UD_English-EWT/en_ewt-ud-test.conllu.gz"
    sents = read_conllu(path)
    assert len(sents) == 2077
    assert sum(len(s) for s in sents) == 25094
    token_ids = [t["id"] for s in sents for t in s.tokens]
    assert sum(isinstance(i, tuple) and i[1] == "-" for i in token_ids) == 354
    assert sum(isinstance(i, tuple) and i[1] == "." for i in token_ids) == 2
    out = tmp_path / "en_ewt-sys.conllu"
    write_conllu(sents, [s.heads for s in sents], [s.deprels for s in sents], out)
    assert out.read_bytes() == gzip.decompress(path.read_bytes())
    scores = score_conllu(path, out)
    assert (scores["uas"], scores["las"], scores["clas"]) == (100.0, 100.0, 100.0)
    assert scores["n_words"] == 25094 and scores["n_sentences"] == 2077


def test_real_ja_gsd_test_has_no_multiword_tokens(data_root: Path) -> None:
    path = data_root / "ud/UD_Japanese-GSD/ja_gsd-ud-test.conllu.gz"
    sents = read_conllu(path)
    assert len(sents) == 543 and sum(len(s) for s in sents) == 13034
    # Japanese-GSD tokenises into words directly: no MWT ranges, no empty nodes.
    assert all(len(s.word_lines) == sum(not line.startswith("#") for line in s.lines) for s in sents)
    scores = score_conllu(path, path)
    assert (scores["uas"], scores["las"], scores["clas"]) == (100.0, 100.0, 100.0)
    assert scores["n_words"] == 13034
