"""Transduction measured: the task metrics on constructed cases with known answers, and every test
source of a prepared paired corpus decoded by a model up to its line end."""
import numpy as np
import pytest

from pipeline.reporting import TRANSDUCTION_COLUMNS, comparison_markdown, transduction_section
from pipeline.scoring.transduction import edit_distance, split_references, transduction_metrics, transduction_table


@pytest.mark.parametrize("a, b, d", [("kitten", "sitting", 3), ("", "abc", 3), ("abc", "", 3), ("flaw", "lawn", 2),
                                     ("same", "same", 0), (["AH0", "B"], ["AH0", "P"], 1), ("ab", "ba", 2)])
def test_edit_distance(a, b, d):
    assert edit_distance(a, b) == d == edit_distance(b, a)


def test_the_metrics_take_the_closest_of_every_reference():
    m = transduction_metrics(["a b", "x", "q"], [["a b", "a c"], ["y"], ["q", "r s"]])
    assert m["sources"] == 3 and m["exact_match"] == pytest.approx(2 / 3)
    assert m["cer"] == pytest.approx(1 / 5)     # edits 0 + 1 + 0 over the closest references' 3 + 1 + 1 characters
    assert m["ter"] == pytest.approx(1 / 4)     # tokens: 0 + 1 + 0 over 2 + 1 + 1
    perfect = transduction_metrics(["2019-03-12", "AH0 B AE1 N"], [["2019-03-12"], ["AH0 B AH0 N", "AH0 B AE1 N"]])
    assert perfect["exact_match"] == 1 and perfect["cer"] == perfect["ter"] == 0
    assert perfect["chrf"] == pytest.approx(100) and perfect["bleu"] == pytest.approx(100)
    wrong = transduction_metrics(["zzzz"], [["2019"]])
    assert wrong["exact_match"] == 0 and wrong["cer"] == 1 and wrong["chrf"] < 10
    with pytest.raises(ValueError):
        transduction_metrics(["a"], [[]])


def test_the_table_and_the_report_columns():
    table = transduction_table(["a|b", "c"], {"greedy": ["x", "d"], "beam (4)": ["y", "e"]}, [["x", "y"], ["e"]])
    assert "| source | greedy | beam (4) | references | match |" in table
    assert "| a\\|b | x | y | x / y | yes / yes |" in table and "| c | d | e | e | no / yes |" in table
    metrics = ({"test_sources": 2} | {k: 0.5 for k, _, _ in TRANSDUCTION_COLUMNS}
               | {"test_beam_width": 4, "test_beam_exact_match": 0.75})
    section = transduction_section(metrics, table)
    assert "2 sources" in section and "greedy: exact match 0.5" in section and "beam (4): exact match 0.75" in section
    stats = {"source": "s", "tokenizer": "char", "vocab_size": 9, "data_hash": "h"}
    with_pairs = comparison_markdown([{"model": "m", "test_bpc": 1.0, **metrics}], stats)
    assert "| exact match | CER | token ER | chrF | BLEU | beam exact match | beam token ER |" in with_pairs
    assert "exact match" not in comparison_markdown([{"model": "m", "test_bpc": 1.0}], stats)


def test_every_test_source_is_decoded_up_to_its_line_end_and_scored(tmp_path):
    """A 9-gram memorises a deterministic mapping: decoding every test source from the prepared
    data gives its reference, and a source written twice has both targets as references. The
    n-gram has no beam search: its results are greedy only."""
    from pipeline.data.prepare import prepare_corpus
    from pipeline.data.prepared import load_prepared
    from pipeline.models.ngram import KneserNeyLM
    from pipeline.saved.ngram import SavedNgram
    from pipeline.scoring.transduction import measure_transduction

    words = ["cat", "dog", "bird", "horse", "fish", "mouse", "owl", "yak"]
    lines = [f"{w}\t{w[::-1].upper()}\n" for _ in range(30) for w in words]
    (tmp_path / "folder").mkdir()
    for split, rows in (("train", lines), ("valid", lines[:16]), ("test", lines[:8] + ["cat\tTACC\n"])):
        (tmp_path / "folder" / f"{split}.txt").write_text("".join(rows))
    prepare_corpus(str(tmp_path / "folder"), tmp_path / "p", tokenizer="char", vocab_size=100, examples="pairs")
    data = load_prepared(tmp_path / "p")
    sources, refs = split_references(data.ids["test"], data.starts("test"), data.tokenizer)
    assert sources == words and refs[0] == ["TAC", "TACC"] and refs[1] == ["GOD"]
    lm = KneserNeyLM.fit(np.asarray(data.ids["train"]), data.tokenizer.vocab_size, 9, boundary_id=data.boundary_id)
    metrics, table = measure_transduction(SavedNgram(lm), data, max_tokens=20, batch_size=3, beam_width=4,
                                          alpha=0.6)
    assert metrics["test_sources"] == 8 and metrics["test_exact_match"] == 1.0 and metrics["test_cer"] == 0.0
    assert not any(k.startswith("test_beam") for k in metrics)
    assert "| horse | ESROH | ESROH | yes |" in table
