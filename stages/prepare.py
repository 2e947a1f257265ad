"""DVC stage: corpus -> data/prepared/{train,valid,test}.npy, vocab.json, stats.json."""
from pipeline.config.params import load_params
from pipeline.data.corpus import load_corpus
from pipeline.data.prepared import build_prepared, save_prepared
from pipeline.data.tokenizers import learn_tokenizer
from pipeline.disk import require_free  # check only
from pipeline.paths import PREPARED, ROOT
from pipeline.stage import run_stage
from pipeline.tracking.runs import model_run


def main(argv: list[str]) -> None:
    p = load_params()
    d = p.data
    corpus = load_corpus(d.corpus, d.split, d.sha256, ROOT)
    # int32 ids, at most one per character, written beside the previous ones before they are replaced
    chars = sum(len(corpus.split(s)) for s in ("train", "valid", "test"))
    require_free(PREPARED, 2 * 4 * chars, "preparing the corpus (the token ids)")
    tokenizer = learn_tokenizer(d.tokenizer, corpus.train, d.vocab_size, d.lowercase)
    data = build_prepared(corpus, tokenizer)
    save_prepared(data, PREPARED)
    s = data.stats
    print(f"prepared {s['source']} with the {d.tokenizer} tokenizer: vocabulary {s['vocab_size']}, "
          + ", ".join(f"{k} {v['tokens']} tokens" for k, v in s["splits"].items()))
    with model_run(p.mlflow.experiment, "data", "prepare", data.data_hash) as run:
        run.log_params({f"data.{k}": v for k, v in vars(d).items()})
        run.log_metrics({f"{k}_{m}": v[m] for k, v in s["splits"].items() for m in ("tokens", "chars")}
                        | {"vocab_size": s["vocab_size"]})
        run.log_artifact(PREPARED / "stats.json")
        run.log_artifact(PREPARED / "vocab.json")


if __name__ == "__main__":
    run_stage(main)
