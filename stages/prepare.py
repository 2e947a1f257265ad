"""DVC stage: corpus -> data/prepared/{train,valid,test}.npy, vocab.json, stats.json (streamed).

A text corpus is streamed through its tokenizer (:mod:`pipeline.data.prepare`); an image corpus
becomes pixel tokens, one image per example (:mod:`pipeline.data.prepare_images`)."""
from pipeline.config.params import load_params
from pipeline.data.corpus import open_corpus
from pipeline.data.images import is_image_corpus
from pipeline.data.prepare import block_bytes, prepare
from pipeline.data.prepare_images import prepare_images
from pipeline.data.splits import SPLITS
from pipeline.data.tokenizers import tokenizer_kind
from pipeline.disk import require_free  # check only
from pipeline.paths import PREPARED, ROOT
from pipeline.stage import run_stage
from pipeline.tracking.runs import model_run


def main(argv: list[str]) -> None:
    p = load_params()
    d = p.data
    if is_image_corpus(d.corpus, ROOT):
        s = prepare_images(d.corpus, PREPARED, levels=d.levels, labels=d.labels, split=d.split, root=ROOT)
        image = s["image"]
        print(f"prepared {s['source']}: {image['height']}x{image['width']} images, {image['levels']} levels"
              + (f", {len(image['labels'])} classes" if image["labels"] else "") + ", "
              + ", ".join(f"{k} {v['images']} images" for k, v in s["splits"].items())
              + f"; independent-pixel baseline {image['baseline']['test_bpd']:.4f} bits/dim on test")
    else:
        corpus = open_corpus(d.corpus, d.split, d.sha256, ROOT, block_bytes(d.memory_mb))
        # int32 ids, at most one per character, written beside the previous ones before they are replaced
        chars = sum(corpus.split(s).chars for s in SPLITS)
        require_free(PREPARED, 2 * 4 * chars, "preparing the corpus (the token ids)")
        kind = tokenizer_kind(d.tokenizer, d.target_tokenizer)
        s = prepare(corpus, PREPARED, kind, d.vocab_size, d.lowercase, d.memory_mb, d.score_after, d.examples,
                    d.max_target_chars)
        print(f"prepared {s['source']} with the {s['tokenizer']} tokenizer: vocabulary {s['vocab_size']}, "
              + ", ".join(f"{k} {v['tokens']} tokens" for k, v in s["splits"].items()))
    with model_run(p.mlflow.experiment, "data", "prepare", s["data_hash"]) as run:
        run.log_corpus(("train", "valid", "test"))
        run.log_params({f"data.{k}": v for k, v in vars(d).items()})
        run.log_metrics({f"data_{k}_{m}": v[m] for k, v in s["splits"].items() for m in ("tokens", "chars")}
                        | {"data_vocab_size": s["vocab_size"]}
                        | {f"data_baseline_{k}": v for k, v in s.get("image", {}).get("baseline", {}).items()})
        run.log_artifact(PREPARED / "stats.json")
        run.log_artifact(PREPARED / "vocab.json")


if __name__ == "__main__":
    run_stage(main)
