"""DVC stage: train one architecture -> models/<arch>/ (the network and run.json), plots/<arch>/history.csv.

The training run is logged to MLflow; the evaluate stage registers the network (the serving code is
not a dependency of training)."""
import functools

from pipeline.config.params import load_params
from pipeline.data.examples import longest_example
from pipeline.data.prepared import load_prepared
from pipeline.io import write_json
from pipeline.models import build_model, count_parameters
from pipeline.errors import SeqlabError
from pipeline.models.catalog import family_of, model_config
from pipeline.models.network import save_network
from pipeline.paths import CHECKPOINTS, MODELS, PLOTS, PREPARED, model_lock
from pipeline.reporting import write_history_csv
from pipeline.stage import run_stage
from pipeline.tracking.runs import model_run
from pipeline.lock import exclusive
from pipeline.training.loop import train_model
from pipeline.training.runtime import is_chief


def network_builder(data, m, t):
    """``build_model`` for this data: an encoder-decoder gets the data's marker id, a 2-D image model
    the image layout, and for both every example must fit one window of the training context (one
    reads its whole source from the window, the other its whole image)."""
    family = family_of(m)
    if family.reads_source or family.reads_image:
        longest = max(longest_example(data.starts(s), len(data.ids[s])) for s in ("train", "valid", "test"))
        if longest > t.seq_len:
            raise SeqlabError(f"train.seq_len: {t.seq_len} is shorter than the longest example ({longest} tokens "
                              f"with its line end); family {m.family!r} reads each example whole: expected "
                              f"train.seq_len >= {longest}" + ("" if family.reads_image else
                                                               ", or a smaller data.max_target_chars"))
    return functools.partial(build_model, marker_id=data.marker_id,
                             image=None if data.image is None else data.image.model_config())


def split_extras(data) -> dict:
    """What training needs of the splits besides their ids: loss masks and example starts."""
    return {f"{split}_{what}": get(split) for split in ("train", "valid")
            for what, get in (("mask", data.mask), ("starts", data.starts))}


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m stages.train ARCH")
    arch = argv[0]
    p = load_params()
    m, t = model_config(p, arch), p.train_for(arch)
    if not is_chief():  # another worker of a multi-worker run: trains in lockstep with the chief, writes nothing
        data = load_prepared(PREPARED)
        train_model(m, t, data.ids["train"], data.ids["valid"], data.tokenizer.vocab_size, data.data_hash, p.seed,
                    CHECKPOINTS / arch, network_builder(data, m, t), **split_extras(data))
        print(f"{arch}: worker done; the chief writes the outputs")
        return
    with exclusive(model_lock(arch), f"a stage of model {arch!r}"):
        train(arch, p, m, t, load_prepared(PREPARED))


def train(arch, p, m, t, data) -> None:
    vocab_size = data.tokenizer.vocab_size
    experiment = p.mlflow.experiment
    with model_run(experiment, arch, "train", data.data_hash, system_metrics=True) as run:
        run.log_corpus(("train", "valid"))
        run.log_params({f"model.{k}": v for k, v in m.as_dict().items() if k != "train"}
                       | {f"train.{k}": v for k, v in vars(t).items()}
                       | {"seed": p.seed, "data.tokenizer": data.tokenizer.kind, "vocab_size": vocab_size})
        result = train_model(m, t, data.ids["train"], data.ids["valid"], vocab_size, data.data_hash, p.seed,
                             CHECKPOINTS / arch, network_builder(data, m, t),
                             on_epoch=lambda row: run.log_history([row]),
                             **split_extras(data))
        params_count = count_parameters(result.model)
        summary = {"arch": arch, "family": m.family, "parameters": params_count, "train_seconds": result.train_seconds,
                   "train_tokens_per_second": result.tokens_per_second, "steps": result.steps,
                   "resumed_from_epoch": result.resumed_from_epoch, **result.settings}
        run.log_metrics({k: summary[k] for k in ("parameters", "train_seconds", "train_tokens_per_second",
                                                 "kept_epoch")})
        run.log_params({f"resolved.{k}": v for k, v in result.settings.items() if k != "kept_epoch"})
        folder = MODELS / arch
        save_network(folder, result.model, m, t.seq_len, vocab_size)
        write_history_csv(PLOTS / arch / "history.csv", result.history)
        run.log_artifact(PLOTS / arch / "history.csv")
        write_json(folder / "run.json", summary | {"run_id": run.id, "data_hash": data.data_hash})
    for name in ("last.npz", "best.npz"):
        (CHECKPOINTS / arch / name).unlink(missing_ok=True)
    print(f"{arch}: {params_count} parameters, {result.tokens_per_second:.0f} tokens/s, training run {run.id}")


if __name__ == "__main__":
    run_stage(main)
