"""DVC stage: Kneser-Ney n-gram baseline -> models/ngram/, metrics/ngram.json, provenance, samples."""
import time

from pipeline.config.params import load_params
from pipeline.data.prepared import load_prepared
from pipeline.disk import require_free  # check only
from pipeline.generation.media import media_results
from pipeline.generation.text import generate_texts, sample_rows
from pipeline.io import write_json, write_text
from pipeline.models.ngram_external import build_disk_bytes, build_kneser_ney
from pipeline.paths import MEDIA, METRICS, MODELS, NGRAM_FILE, PREPARED, PROVENANCE, SAMPLES
from pipeline.reporting import format_samples
from pipeline.saved.ngram import SavedNgram
from pipeline.scoring.protocol import flat_metrics, split_scores
from pipeline.scoring.transduction import paired_results
from pipeline.stage import run_stage
from pipeline.tracking.registration import register_generator, sampler_defaults
from pipeline.tracking.registry import registered_name, set_version_metrics
from pipeline.tracking.runs import model_run


def main(argv: list[str]) -> None:
    p = load_params()
    data = load_prepared(PREPARED)
    tok = data.tokenizer
    model_file = MODELS / "ngram" / NGRAM_FILE
    model_file.parent.mkdir(parents=True, exist_ok=True)
    require_free(model_file.parent, build_disk_bytes(len(data.ids["train"]), p.ngram.order),
                 "the n-gram build (its sorted runs and the model)")
    t0 = time.perf_counter()
    build_kneser_ney(data.ids["train"], tok.vocab_size, p.ngram.order, model_file, memory_mb=p.ngram.memory_mb,
                     tmp_dir=model_file.parent, progress=True, boundary_id=data.boundary_id)
    build_seconds = time.perf_counter() - t0
    SavedNgram.mark(model_file.parent)
    saved = SavedNgram.load(model_file.parent)
    lm = saved.lm
    per_split = {s: split_scores(lm.logprob_pieces(data.ids[s]), data.chars(s), data.mask(s)) for s in ("valid", "test")}
    g = p.generate
    media, media_section, media_files = media_results(saved.sampler(), data, per_split, g, MEDIA / "ngram")
    samples = [] if data.image or media else list(zip(g.prompts, generate_texts(saved.sampler(), tok, sample_rows(g))))
    transduced, section = paired_results(saved, data, p.eval)      # what it outputs, paired data
    scores = flat_metrics(per_split) | transduced | media
    metrics = scores | {
        "parameters": int(lm.parameters), "train_seconds": build_seconds,
        "train_tokens_per_second": len(data.ids["train"]) / build_seconds}
    provenance = {"family": f"{p.ngram.order}-gram KN", "order": p.ngram.order, "protocol": "stream",
                  "data_hash": data.data_hash}
    if data.boundary_id is not None:    # the context restarts after every example's line end
        provenance |= {"examples": data.examples, "context_reset_after": int(data.boundary_id)}
    write_json(METRICS / "ngram.json", metrics)
    samples_text = format_samples("ngram", samples, g) + section + media_section
    write_text(SAMPLES / "ngram.txt", samples_text)
    print(f"ngram order {p.ngram.order}: valid ppl {metrics['valid_ppl']:.3f}, test bpc {metrics['test_bpc']:.4f}")
    name = registered_name(p.mlflow.experiment, "ngram")
    with model_run(p.mlflow.experiment, "ngram", "ngram", data.data_hash) as run:
        run.log_corpus(("train", "valid", "test"))
        run.log_params({"order": p.ngram.order, "discounts": str(lm.discounts),
                        "fallback_orders": str(lm.fallback_orders)})
        run.log_metrics(metrics)
        run.log_text(samples_text, "samples.txt")
        for path in media_files:
            run.log_artifact(path, "media")
        version = register_generator(MODELS / "ngram", PREPARED / "vocab.json", None, name, data.data_hash,
                                     sampler_defaults(g))
    set_version_metrics(name, version, scores)
    write_json(PROVENANCE / "ngram.json", provenance | {"registered_model": name, "version": version,
                                                        "run_id": run.id})


if __name__ == "__main__":
    run_stage(main)
