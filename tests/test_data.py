"""Corpus sources, tensorflow-text tokenizers and the prepared-data folder."""
import hashlib
import io

import numpy as np
import pytest

from pipeline.data import corpus as corpus_mod
from pipeline.data.corpus import load_corpus, split_file
from pipeline.data.prepare import prepare_corpus
from pipeline.data.prepared import load_prepared
from pipeline.data.text_blocks import scan
from pipeline.data.tokenizers import learn_tokenizer, load_tokenizer
from pipeline.errors import SeqlabError
from pipeline.data.vocab_layout import BOS_ID, UNK_ID

TEXT = "the cat sat on the mat\nthe dog sat on the log\n" * 20 + "a bird flew\n" * 5


def test_builtin_corpus_is_offline_and_split_at_lines():
    c = load_corpus("builtin:python-docs", [0.9, 0.05, 0.05])
    assert len(c.train) > 300_000 and c.valid and c.test
    assert c.train.endswith("\n") and c.valid.endswith("\n")


@pytest.mark.parametrize("block", [64, 1 << 20])
def test_split_fractions_and_line_starts(block):
    parts = split_file(scan("x", data=TEXT.encode(), block_bytes=block), [0.8, 0.1, 0.1], "x")
    tr, va, te = ("".join(parts[s].chunks()) for s in ("train", "valid", "test"))
    assert tr + va + te == TEXT
    assert tr.endswith("\n") and va.endswith("\n")
    assert abs(len(tr) / len(TEXT) - 0.8) < 0.05


def test_folder_corpus_used_as_given(tmp_path):
    for s in ("train", "valid", "test"):
        (tmp_path / f"{s}.txt").write_text(f"{s} text\n")
    c = load_corpus(str(tmp_path), [0.9, 0.05, 0.05])
    assert (c.train, c.valid, c.test) == ("train text\n", "valid text\n", "test text\n")
    (tmp_path / "test.txt").unlink()
    with pytest.raises(SeqlabError, match="missing test.txt"):
        load_corpus(str(tmp_path), [0.9, 0.05, 0.05])


def test_empty_corpus(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("  \n\n")
    with pytest.raises(SeqlabError, match=r"empty.txt: the corpus is empty"):
        load_corpus(str(f), [0.9, 0.05, 0.05])


def test_non_utf8_names_file_and_byte_offset(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("héllo wörld\n".encode("latin-1"))
    with pytest.raises(SeqlabError, match=r"latin1.txt: not valid UTF-8 at byte offset 1 \(byte 0xe9\)"):
        load_corpus(str(f), [0.9, 0.05, 0.05])


def test_corpus_too_short_for_split(tmp_path):
    f = tmp_path / "short.txt"
    f.write_text("one line only\n")
    with pytest.raises(SeqlabError, match="corpus too short for data.split"):
        load_corpus(str(f), [0.9, 0.05, 0.05])


def test_unknown_sources():
    with pytest.raises(SeqlabError, match="unknown builtin"):
        load_corpus("builtin:nope", [0.9, 0.05, 0.05])
    with pytest.raises(SeqlabError, match="only https"):
        load_corpus("http://example.org/x.txt", [0.9, 0.05, 0.05])
    with pytest.raises(SeqlabError, match="is neither an image corpus"):
        load_corpus("no/such/file.txt", [0.9, 0.05, 0.05])


def test_url_sha256_mismatch_saves_nothing(tmp_path, monkeypatch):
    payload = TEXT.encode()
    monkeypatch.setattr(corpus_mod.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    with pytest.raises(SeqlabError, match="sha256 mismatch: expected 00"):
        load_corpus("https://example.org/c.txt", [0.8, 0.1, 0.1], "00" * 32, tmp_path)
    assert not list(tmp_path.rglob("*c.txt"))
    good = hashlib.sha256(payload).hexdigest()
    c = load_corpus("https://example.org/c.txt", [0.8, 0.1, 0.1], good, tmp_path)
    assert c.train + c.valid + c.test == TEXT
    monkeypatch.setattr(corpus_mod.urllib.request, "urlopen", lambda url, timeout: 1 / 0)
    assert load_corpus("https://example.org/c.txt", [0.8, 0.1, 0.1], good, tmp_path).train == c.train  # cached


@pytest.mark.parametrize("kind", ["char", "word", "wordpiece"])
def test_tokenizers_round_trip_and_reserved_ids(kind, tmp_path):
    tok = learn_tokenizer(kind, TEXT, vocab_size=60)
    assert tok.tokens[BOS_ID] == "<bos>" and tok.tokens[UNK_ID] == "<unk>"
    ids = tok.encode("the cat sat\nthe dog\n")
    assert ids.dtype == np.int32 and BOS_ID not in ids
    assert tok.decode(ids) == "the cat sat\nthe dog\n"
    tok.save(tmp_path / "vocab.json")
    again = load_tokenizer(tmp_path / "vocab.json")
    assert again.kind == kind and again.options == {"vocab_size": 60, "lowercase": False}
    np.testing.assert_array_equal(again.encode("the cat sat\n"), tok.encode("the cat sat\n"))


def test_word_tokenizer_eol_unk_and_cap():
    tok = learn_tokenizer("word", TEXT, vocab_size=8)
    ids = tok.encode("the zebra\n\n")
    assert [tok.tokens[i] for i in ids] == ["the", "<unk>", "<eol>", "<eol>"]  # one <eol> per line
    assert tok.vocab_size == 8
    assert learn_tokenizer("word", "<unk> a\n", 10).encode("<unk>\n")[0] == UNK_ID  # corpus <unk> is <unk>


def test_char_word_reads_sources_as_characters_and_targets_as_words(tmp_path):
    pairs = "bat\tB AE1 T\nab\tAE1 B\nbb\tB B\n"
    tok = learn_tokenizer("char+word", pairs, vocab_size=100)
    assert tok.eol_id is None and tok.tokens[:2] == ["<bos>", "<unk>"]
    ids = tok.encode(pairs)
    assert tok.decode(ids) == pairs
    pieces = [tok.tokens[i] for i in tok.encode("ab\tAE1 B\n")]
    assert pieces == ["a", "b", "\t", "AE1", "B", "\n"]
    letter_b, phone_b = tok.encode("b\tB")[[0, 2]]      # the letter and the one-letter word: two tokens
    assert letter_b < tok.words_from <= phone_b and tok.tokens[phone_b] == "B"
    assert tok.decode(tok.encode("ab\tAE1 B\n")[3:5]) == "AE1 B"   # an output alone keeps its spaces
    assert tok.decode(tok.encode("a\tZH B\n")) == "a\t<unk> B\n"       # unknown words are <unk>
    tok.save(tmp_path / "vocab.json")
    again = load_tokenizer(tmp_path / "vocab.json")
    assert again.kind == "char+word" and again.words_from == tok.words_from
    np.testing.assert_array_equal(again.encode(pairs), ids)
    small = learn_tokenizer("char+word", pairs, vocab_size=5)   # the commonest three of both kinds together
    assert small.tokens[2:] == ["\t", "b", "B"] and small.words_from == 4


def test_char_unknown_maps_to_unk():
    tok = learn_tokenizer("char", "abc\n", vocab_size=100)
    assert list(tok.encode("abz")) == [tok.tokens.index("a"), tok.tokens.index("b"), UNK_ID]


def test_prepared_round_trip_and_hash(tmp_path):
    c = load_corpus("builtin:python-docs", [0.9, 0.05, 0.05])
    stats = prepare_corpus("builtin:python-docs", tmp_path / "prepared", tokenizer="char", vocab_size=200)
    assert stats["splits"]["valid"]["chars"] == len(c.valid) == stats["splits"]["valid"]["tokens"]
    again = load_prepared(tmp_path / "prepared")
    assert again.data_hash == stats["data_hash"] and again.stats == stats
    np.testing.assert_array_equal(again.ids["test"], learn_tokenizer("char", c.train, 200).encode(c.test))
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == [
        "stats.json", "test.npy", "train.npy", "valid.npy", "vocab.json"]


def test_a_wordpiece_vocabulary_below_the_alphabet_is_an_error():
    """The learner keeps every character whatever vocab_size says: a cap it cannot honour is refused."""
    with pytest.raises(SeqlabError, match=r"data.vocab_size: 8 is below what wordpiece needs for this corpus"):
        learn_tokenizer("wordpiece", TEXT, vocab_size=8)


def test_corpus_hygiene_bom_and_line_ends_are_normalised_and_counted(tmp_path):
    lines = "".join(f"line {i} of the corpus\r\n" for i in range(60))
    (tmp_path / "c.txt").write_bytes(b"\xef\xbb\xbf" + lines.encode() + b"old mac\rend\n")
    c = load_corpus(str(tmp_path / "c.txt"), [0.8, 0.1, 0.1])
    text = c.train + c.valid + c.test
    assert "\r" not in text and "\ufeff" not in text and text.startswith("line 0 of")
    assert c.hygiene == {"bom_removed": 1, "crlf_line_ends": 60, "cr_line_ends": 1}
    plain = tmp_path / "plain.txt"
    plain.write_text(text, encoding="utf-8")
    same = load_corpus(str(plain), [0.8, 0.1, 0.1])
    assert (same.train, same.valid, same.test) == (c.train, c.valid, c.test)   # the same ids follow
    assert same.hygiene == {"bom_removed": 0, "crlf_line_ends": 0, "cr_line_ends": 0}


@pytest.mark.parametrize("char, name", [("\x00", "0000"), ("\x0c", "000C"), ("\x1b", "001B")])
def test_corpus_hygiene_control_characters_are_refused_where_they_are(tmp_path, char, name):
    path = tmp_path / "c.txt"
    path.write_text("first line\nsecond" + char + " line\n" * 50, encoding="utf-8")
    with pytest.raises(SeqlabError) as e:
        load_corpus(str(path), [0.8, 0.1, 0.1])
    assert str(e.value).startswith(f"{path}: control character U+{name} at line 2, column 7 (character offset 17)")
