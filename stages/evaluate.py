"""DVC stage: score one trained network and generate its samples -> metrics/<arch>.json, samples.

Evaluation and generation share one stage because both need the model loaded (one TensorFlow
start-up per architecture instead of two).
"""
import dataclasses

import numpy as np

from pipeline import tracking
from pipeline.evaluation import flat_metrics, network_logprobs, split_metrics
from pipeline.generation import generate
from pipeline.io import read_json, write_json, write_text
from pipeline.models import make_stepper
from pipeline.params import load_params
from pipeline.prepared import load_prepared
from pipeline.registration import ensure_registered
from pipeline.reporting import format_samples
from pipeline.saved_model import load_network
from pipeline.stage import METRICS, MODELS, PREPARED, SAMPLES, run_stage


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m stages.evaluate ARCH")
    arch = argv[0]
    p = load_params()
    data = load_prepared(PREPARED)
    tok = data.tokenizer
    model, cfg, seq_len = load_network(MODELS / arch)
    stepper = make_stepper(model, cfg)
    per_split, protocol = {}, {}
    for split in ("valid", "test"):
        lp, protocol = network_logprobs(model, stepper, cfg.family, data.ids[split], seq_len,
                                        p.eval.stride_fraction, p.eval.batch_size)
        per_split[split] = split_metrics(lp, data.chars(split))
    g = p.generate
    rng = np.random.default_rng(g.seed)
    samples = [(prompt, tok.decode(generate(stepper, tok.encode(prompt), g.max_tokens, rng,
                                            g.temperature, g.top_k, g.top_p))) for prompt in g.prompts]
    summary = read_json(MODELS / arch / "run.json")
    registered = ensure_registered(p.mlflow.experiment, arch, summary, MODELS / arch, model, dataclasses.asdict(cfg),
                                   PREPARED / "vocab.json", data.data_hash, g)
    metrics = flat_metrics(per_split) | protocol | {
        k: summary[k] for k in ("parameters", "train_seconds", "train_tokens_per_second", "family")} | {
        "data_hash": data.data_hash, "registered_model": summary["registered_model"],
        "version": registered["version"], "run_id": registered["run_id"]}
    samples_text = format_samples(arch, samples, g)
    write_json(METRICS / f"{arch}.json", metrics)
    write_text(SAMPLES / f"{arch}.txt", samples_text)
    print(f"{arch}: valid ppl {metrics['valid_ppl']:.3f} bpc {metrics['valid_bpc']:.4f}, "
          f"test ppl {metrics['test_ppl']:.3f} bpc {metrics['test_bpc']:.4f}")
    numeric = {k: v for k, v in flat_metrics(per_split).items()}
    with tracking.model_run(p.mlflow.experiment, arch, "evaluate", data.data_hash, run_id=registered["run_id"]):
        import mlflow
        mlflow.log_metrics(numeric)
        mlflow.log_text(samples_text, "samples.txt")
    tracking.set_version_metrics(summary["registered_model"], registered["version"], numeric)


if __name__ == "__main__":
    run_stage(main)
