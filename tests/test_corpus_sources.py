"""The table of corpus sources: each kind fingerprints and reads tiny data, one sha256 check, clear errors."""
import ast
import hashlib
import io
import sys

import pytest

from pipeline.data import corpus as corpus_mod
from pipeline.data import file_hashes
from pipeline.data import splits as splits_mod
from pipeline.data.corpus import (BUILTIN_TEXTS, BUILTINS, SOURCES, Builtin, BuiltinSource, FolderSource,
                                  TextFileSource, UrlSource, check_sha256, fingerprint, load_corpus,
                                  open_corpus, source_for)
from pipeline.data.images import ImageSource
from pipeline.errors import SeqlabError
from tests.conftest import ROOT

TEXT = "".join(f"line {i} of a tiny corpus\n" for i in range(40))
SPLIT = [0.8, 0.1, 0.1]
URL = "https://example.org/tiny.txt"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def joined(spec, *args, **kw) -> str:
    c = open_corpus(spec, SPLIT, *args, **kw)
    return "".join("".join(c.split(s).chunks()) for s in splits_mod.SPLITS)


@pytest.fixture
def serve(monkeypatch):
    """urlopen answers ``state["payload"]`` and counts the calls in ``state["calls"]``."""
    state = {"payload": TEXT.encode(), "calls": 0}

    def urlopen(url, timeout):
        state["calls"] += 1
        return io.BytesIO(state["payload"])
    monkeypatch.setattr(corpus_mod.urllib.request, "urlopen", urlopen)
    return state


def test_one_source_per_kind_in_order(tmp_path):
    (tmp_path / "f.txt").write_text(TEXT)
    (tmp_path / "train.txt").write_text(TEXT)       # a text corpus's folder, although a subfolder holds images
    (tmp_path / "pngs").mkdir()
    (tmp_path / "pngs" / "a.png").write_bytes(b"")
    (tmp_path / "a.npy").write_bytes(b"")
    assert [type(s) for s in SOURCES] == [ImageSource, BuiltinSource, UrlSource, FolderSource, TextFileSource]
    assert all(s.describe() for s in SOURCES)
    for spec, kind in [("builtin:python-docs", BuiltinSource), ("builtin:nope", BuiltinSource), (URL, UrlSource),
                       (str(tmp_path), FolderSource), (str(tmp_path / "f.txt"), TextFileSource),
                       ("f.txt", TextFileSource), ("builtin:digits", ImageSource), ("builtin:mnist", ImageSource),
                       ("pngs", ImageSource), ("a.npy", ImageSource)]:
        assert type(source_for(spec, tmp_path)) is kind, spec


def test_splits_have_a_module_of_their_own():
    """prepared.py (read by every network stage) must not import the corpus sources."""
    assert corpus_mod.SPLITS is splits_mod.SPLITS == ("train", "valid", "test")
    tree = ast.parse((ROOT / "pipeline/data/prepared.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "pipeline.data.splits" in imported and "pipeline.data.corpus" not in imported


def test_builtin_fingerprint_and_reading():
    text = BUILTIN_TEXTS["builtin:python-docs"].text()
    assert BUILTINS == ("builtin:python-docs", "builtin:cmudict", "builtin:dates", "builtin:abc-folk")
    assert fingerprint("builtin:python-docs") == {
        "source": "builtin:python-docs",
        "files": {"builtin:python-docs": sha(text.encode()), "python": "3.11.7"}}
    assert joined("builtin:python-docs") == text


def test_the_default_corpus_does_not_follow_the_interpreter():
    """The default corpus is a snapshot of one release's documentation, not the running Python's
    ``pydoc_data``: CI's patch release (setup-python picks the newest) and a developer's give the
    same text and the same data hash. Its text is what that release's ``pydoc_data`` joins to."""
    text = BUILTIN_TEXTS["builtin:python-docs"].text()
    assert len(text) > 400_000 and text.count("\n\n") > 78
    assert sha(text.encode()) == "2a95af4ac93f5b719944030ce3769070ddf827d847cba42192afa8da989e5dc4"
    if sys.version.split()[0] == "3.11.7":
        from pydoc_data import topics
        assert text == "\n\n".join(topics.topics[k].strip("\n") for k in sorted(topics.topics)) + "\n"


def test_a_new_builtin_is_one_entry(monkeypatch):
    monkeypatch.setitem(BUILTIN_TEXTS, "builtin:tiny", Builtin(lambda: TEXT, "a tiny text"))
    assert fingerprint("builtin:tiny") == {"source": "builtin:tiny", "files": {"builtin:tiny": sha(TEXT.encode())}}
    c = load_corpus("builtin:tiny", SPLIT)
    assert c.train + c.valid + c.test == TEXT and c.source == "builtin:tiny"
    assert "builtin:tiny" in source_for("builtin:tiny").describe()


def test_unknown_builtin_names_the_available_ones(monkeypatch):
    monkeypatch.setitem(BUILTIN_TEXTS, "builtin:tiny", Builtin(lambda: TEXT, "a tiny text"))
    for call in (lambda: fingerprint("builtin:nope"), lambda: open_corpus("builtin:nope", SPLIT)):
        with pytest.raises(SeqlabError) as e:
            call()
        assert str(e.value) == ("data.corpus: unknown builtin 'builtin:nope'; "
                                "available: builtin:python-docs, builtin:cmudict, builtin:dates, builtin:abc-folk, builtin:tiny")


def test_text_file_fingerprint_cache_and_reading(tmp_path, monkeypatch):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT)
    stats = {}
    assert fingerprint(str(path), stats=stats) == {"source": str(path), "files": {"tiny.txt": sha(TEXT.encode())}}
    assert fingerprint("tiny.txt", root=tmp_path)["files"] == {"tiny.txt": sha(TEXT.encode())}
    assert list(stats) == [str(path.resolve())]
    with monkeypatch.context() as m:     # unchanged size and mtime: the file is not read again
        m.setattr(file_hashes, "file_sha256", lambda p: pytest.fail("re-hashed an unchanged file"))
        assert fingerprint(str(path), stats=stats)["files"] == {"tiny.txt": sha(TEXT.encode())}
    path.write_text(TEXT + "one more line\n")
    assert fingerprint(str(path), stats=stats)["files"] == {"tiny.txt": sha((TEXT + "one more line\n").encode())}
    c = open_corpus("tiny.txt", SPLIT, root=tmp_path, block_bytes=64)
    assert c.source == "tiny.txt" and c.split("train").file.where == str(path)
    assert joined("tiny.txt", root=tmp_path) == TEXT + "one more line\n"


def test_folder_fingerprint_and_reading(tmp_path):
    for s in splits_mod.SPLITS:
        (tmp_path / f"{s}.txt").write_text(f"the {s} text\n")
    assert fingerprint(str(tmp_path))["files"] == {f"{s}.txt": sha(f"the {s} text\n".encode())
                                                   for s in splits_mod.SPLITS}
    c = load_corpus(str(tmp_path), SPLIT)
    assert (c.train, c.valid, c.test) == ("the train text\n", "the valid text\n", "the test text\n")


def test_url_fingerprint_is_the_pin_and_reading_downloads_once(tmp_path, serve):
    pin = sha(TEXT.encode())
    assert fingerprint(URL, pin.upper()) == {"source": URL, "files": {URL: pin}}
    assert serve["calls"] == 0                        # fingerprinting fetches nothing
    assert joined(URL, pin, tmp_path) == TEXT and serve["calls"] == 1
    assert joined(URL, pin, tmp_path) == TEXT and serve["calls"] == 1   # from data/downloads
    assert [p.name for p in (tmp_path / "data" / "downloads").iterdir()] == [f"{pin[:12]}-tiny.txt"]
    for call in (lambda: fingerprint(URL), lambda: open_corpus(URL, SPLIT, None, tmp_path)):
        with pytest.raises(SeqlabError, match=r"^data.sha256: required when data.corpus is an https URL$"):
            call()


def test_a_bad_sha256_is_one_clear_error_and_saves_nothing(tmp_path, serve):
    pin = sha(TEXT.encode())
    wrong = "ab" * 32
    with pytest.raises(SeqlabError) as e:
        open_corpus(URL, SPLIT, wrong, tmp_path)
    assert str(e.value) == f"data.corpus: {URL}: sha256 mismatch: expected {wrong}, got {pin}; nothing was saved"
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    # a cached download whose bytes no longer match is fetched again, not used
    joined(URL, pin, tmp_path)
    cached = tmp_path / "data" / "downloads" / f"{pin[:12]}-tiny.txt"
    cached.write_text("corrupted\n")
    assert joined(URL, pin, tmp_path) == TEXT and serve["calls"] == 3


def test_check_sha256_names_where_and_both_digests():
    check_sha256("corpus.txt", "ab" * 32, ("AB" * 32))          # either case
    with pytest.raises(SeqlabError) as e:
        check_sha256("corpus.txt", "ab" * 32, "cd" * 32)
    assert str(e.value) == f"data.corpus: corpus.txt: sha256 mismatch: expected {'cd' * 32}, got {'ab' * 32}"


def test_a_download_error_names_the_url(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise OSError("network unreachable")
    monkeypatch.setattr(corpus_mod.urllib.request, "urlopen", offline)
    with pytest.raises(SeqlabError, match=rf"^data.corpus: could not download {URL}: network unreachable$"):
        open_corpus(URL, SPLIT, "ab" * 32, tmp_path)


def test_a_spec_no_source_takes_lists_every_kind(tmp_path):
    with pytest.raises(SeqlabError) as e:
        fingerprint("no/such.txt", root=tmp_path)
    message = str(e.value)
    assert message.startswith("data.corpus: 'no/such.txt' is neither an image corpus")
    assert all(s.describe() in message for s in SOURCES)
    with pytest.raises(SeqlabError, match=r"^data.corpus: 'http://example.org/x.txt': only https:// URLs"):
        open_corpus("http://example.org/x.txt", SPLIT)
