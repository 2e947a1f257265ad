"""DVC stage: register one trained network, score it and generate its samples -> metrics, provenance, samples.

Registering, evaluation and generation share one stage because all three need the model loaded
(one TensorFlow start-up per architecture instead of three). Registering lives here, not in
training, so that the serving code is a dependency of this stage only: editing it registers again
(a new version; an unchanged one is found, see ``pipeline.tracking.registration``) and never retrains.
"""
from pipeline.config.params import load_params
from pipeline.data.prepared import load_prepared
from pipeline.generation.media import media_results
from pipeline.generation.text import generate_texts, sample_rows
from pipeline.io import read_json, write_json, write_text
from pipeline.models.network import load_network
from pipeline.paths import MEDIA, METRICS, MODELS, PREPARED, PROVENANCE, SAMPLES, model_lock
from pipeline.reporting import format_samples
from pipeline.scoring.protocol import flat_metrics, network_pieces, split_scores
from pipeline.saved.network import SavedNetwork
from pipeline.scoring.transduction import paired_results
from pipeline.stage import run_stage
from pipeline.tracking.registration import register_trained
from pipeline.tracking.registry import set_version_metrics
from pipeline.tracking.runs import model_run
from pipeline.lock import exclusive


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m stages.evaluate ARCH")
    arch = argv[0]
    p = load_params()
    with exclusive(model_lock(arch), f"a stage of model {arch!r}"):
        evaluate(arch, p)


def evaluate(arch: str, p) -> None:
    data = load_prepared(PREPARED)
    tok = data.tokenizer
    network = load_network(MODELS / arch)
    saved = SavedNetwork(network)           # one stepper (one traced step) for scoring, samples and transduction
    stepper = saved.stepper()
    per_split, protocol = {}, {}
    for split in ("valid", "test"):
        # piece by piece: a split's log-probs (8 bytes a token) are never held at once
        pieces, protocol = network_pieces(network, data.ids[split], p.eval.stride_fraction, p.eval.batch_size,
                                          stepper=stepper, starts=data.starts(split), examples=data.examples)
        per_split[split] = split_scores(pieces, data.chars(split), data.mask(split))
    g = p.generate
    media, media_section, media_files = media_results(saved.sampler(), data, per_split, g, MEDIA / arch)
    samples = [] if data.image or media else list(zip(g.prompts, generate_texts(saved.sampler(), tok, sample_rows(g))))
    summary = read_json(MODELS / arch / "run.json")
    registered = register_trained(p.mlflow.experiment, arch, summary, MODELS / arch, network,
                                  PREPARED / "vocab.json", data.data_hash, g, p.eval.length_penalty)
    transduced, section = paired_results(saved, data, p.eval)   # what it outputs, paired data
    scores = flat_metrics(per_split) | transduced | media
    metrics = scores | {k: summary[k] for k in ("parameters", "train_seconds", "train_tokens_per_second")}
    provenance = {"family": summary["family"], **protocol, "train_state": summary.get("state"),
                  "kept_epoch": summary.get("kept_epoch"), "data_hash": data.data_hash,
                  "registered_model": registered["name"], "version": registered["version"],
                  "run_id": registered["run_id"]}
    samples_text = format_samples(arch, samples, g) + section + media_section
    write_json(METRICS / f"{arch}.json", metrics)
    write_json(PROVENANCE / f"{arch}.json", provenance)
    write_text(SAMPLES / f"{arch}.txt", samples_text)
    print(f"{arch}: valid ppl {metrics['valid_ppl']:.3f} bpc {metrics['valid_bpc']:.4f}, "
          f"test ppl {metrics['test_ppl']:.3f} bpc {metrics['test_bpc']:.4f}")
    with model_run(p.mlflow.experiment, arch, "evaluate", data.data_hash, run_id=registered["run_id"]) as run:
        run.log_corpus(("valid", "test"))
        run.log_metrics(scores)
        run.log_text(samples_text, "samples.txt")
        for path in media_files:
            run.log_artifact(path, "media")
    set_version_metrics(registered["name"], registered["version"], scores)


if __name__ == "__main__":
    run_stage(main)
