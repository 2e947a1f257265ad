"""DVC stage: corpus -> data/prepared/{train,valid,test}.npy, vocab.json, stats.json."""
from pipeline import tracking
from pipeline.corpus import load_corpus
from pipeline.params import load_params
from pipeline.prepared import build_prepared, save_prepared
from pipeline.stage import PREPARED, ROOT, run_stage
from pipeline.tokenizers import learn_tokenizer


def main(argv: list[str]) -> None:
    p = load_params()
    d = p.data
    corpus = load_corpus(d.corpus, d.split, d.sha256, ROOT)
    tokenizer = learn_tokenizer(d.tokenizer, corpus.train, d.vocab_size, d.lowercase)
    data = build_prepared(corpus, tokenizer)
    save_prepared(data, PREPARED)
    s = data.stats
    print(f"prepared {s['source']} with the {d.tokenizer} tokenizer: vocabulary {s['vocab_size']}, "
          + ", ".join(f"{k} {v['tokens']} tokens" for k, v in s["splits"].items()))
    with tracking.model_run(p.mlflow.experiment, "data", "prepare", data.data_hash):
        import mlflow
        mlflow.log_params({f"data.{k}": v for k, v in vars(d).items()})
        mlflow.log_metrics({f"{k}_{m}": v[m] for k, v in s["splits"].items() for m in ("tokens", "chars")}
                           | {"vocab_size": s["vocab_size"]})
        mlflow.log_artifact(str(PREPARED / "stats.json"))
        mlflow.log_artifact(str(PREPARED / "vocab.json"))


if __name__ == "__main__":
    run_stage(main)
