"""Load and validate ``params.yaml`` into typed objects before any work starts.

Every key is checked against the dataclasses below (``pipeline.config.schema``): unknown keys get a
did-you-mean, wrong types and out-of-range values name the key path and what was expected. Each
entry of ``models`` is checked here only as far as config knows it (a family named, ``train``
overrides valid): its family's own parameters are validated by ``pipeline.models.catalog.model_configs``
(the corpus stage, first at every repro, checks them all), so config imports no model code.
A preset (``presets/<name>.yaml``) is a partial overlay with the same schema.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config.schema import build, check_value
from pipeline.config.schema import spec as _spec
from pipeline.errors import SeqlabError

TOKENIZERS = ("char", "word", "wordpiece")
TARGET_TOKENIZERS = ("char", "word")
EXAMPLE_MODES = ("stream", "lines", "pairs")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")     # model and experiment names


@dataclass(frozen=True)
class DataParams:
    corpus: str = "builtin:python-docs"
    sha256: str | None = None
    tokenizer: str = field(default="char", metadata=_spec(choices=TOKENIZERS))
    vocab_size: int = field(default=8000, metadata=_spec(ge=8))
    lowercase: bool = False
    split: list[float] = field(default_factory=lambda: [0.9, 0.05, 0.05])
    memory_mb: int = field(default=2048, metadata=_spec(ge=64))   # prepare's working memory, any corpus size
    score_after: str | None = None   # loss mask: only the tokens after this marker on its line are trained and scored
    # stream: the text is one stream; lines: each line is one example, never seen across by a model;
    # pairs: each line is one example source<TAB>target, checked, and only the target is scored
    examples: str = field(default="stream", metadata=_spec(choices=EXAMPLE_MODES))
    max_target_chars: int | None = field(default=None, metadata=_spec(ge=1))   # pairs: the longest target allowed
    # pairs: the target's tokens, characters or its whitespace-separated words (phonemes, the words of
    # a translation); the source is characters either way
    target_tokenizer: str = field(default="char", metadata=_spec(choices=TARGET_TOKENIZERS))
    # image corpora (pipeline.data.images): the intensity levels pixels are quantised to (null: the
    # corpus's own; builtin:mnist binarises), and whether each image is conditioned on its class
    levels: int | None = field(default=None, metadata=_spec(ge=2, le=256))
    labels: bool = False


@dataclass(frozen=True)
class NgramParams:
    order: int = field(default=5, metadata=_spec(ge=1, le=10))
    memory_mb: int = field(default=2048, metadata=_spec(ge=16))   # the build's working memory (it sorts on disk)


@dataclass(frozen=True)
class TrainParams:
    seq_len: int = field(default=128, metadata=_spec(ge=2))
    batch_size: int = field(default=32, metadata=_spec(ge=1))
    epochs: int = field(default=4, metadata=_spec(ge=1))
    steps_per_epoch: int = field(default=200, metadata=_spec(ge=1))
    steps_per_execution: int = field(default=10, metadata=_spec(ge=1))
    learning_rate: float = field(default=2e-3, metadata=_spec(gt=0, le=10))
    min_lr_ratio: float = field(default=0.1, metadata=_spec(ge=0, le=1))
    warmup_steps: int = field(default=100, metadata=_spec(ge=0))
    weight_decay: float = field(default=0.0, metadata=_spec(ge=0))
    beta1: float = field(default=0.9, metadata=_spec(ge=0, lt=1))
    beta2: float = field(default=0.99, metadata=_spec(ge=0, lt=1))
    clipnorm: float = field(default=1.0, metadata=_spec(ge=0))
    eval_tokens: int = field(default=16384, metadata=_spec(ge=1))
    precision: str = field(default="auto", metadata=_spec(choices=("auto", "float32", "mixed_bfloat16", "mixed_float16")))
    jit_compile: str = field(default="auto", metadata=_spec(choices=("auto", "true", "false")))
    distribute: str = field(default="auto", metadata=_spec(choices=("auto", "none", "mirrored", "multi_worker")))
    # windows: every window from a zero state at a random offset; carried: truncated BPTT, contiguous
    # tracks with the state carried from window to window (stream families); auto: carried where it applies
    state: str = field(default="auto", metadata=_spec(choices=("auto", "windows", "carried")))
    keep: str = field(default="last", metadata=_spec(choices=("last", "best")))   # best: the epoch of least validation loss
    # Polyak averaging: the momentum of a moving average of the weights, which validation scores and
    # the run ends with (0: off, the last weights)
    ema: float = field(default=0.0, metadata=_spec(ge=0, lt=1))


@dataclass(frozen=True)
class EvalParams:
    batch_size: int = field(default=32, metadata=_spec(ge=1))
    stride_fraction: float = field(default=0.5, metadata=_spec(gt=0, le=1))
    max_output_tokens: int = field(default=128, metadata=_spec(ge=1))   # paired corpora: a decoded output's cap
    beam_width: int = field(default=4, metadata=_spec(ge=1, le=64))      # paired corpora: beam search beside greedy (1: greedy only)
    length_penalty: float = field(default=0.6, metadata=_spec(ge=0, le=4))   # GNMT's alpha: the beam's output by log p / ((5 + n) / 6) ** alpha


@dataclass(frozen=True)
class GenerateParams:
    prompts: list[str] = field(default_factory=lambda: ["The ", "A function "])
    max_tokens: int = field(default=200, metadata=_spec(ge=1, le=2048))    # the served cap (tracking/requests.py)
    temperature: float = field(default=0.8, metadata=_spec(ge=0, le=100))
    top_k: int = field(default=0, metadata=_spec(ge=0))
    top_p: float = field(default=0.95, metadata=_spec(gt=0, le=1))
    seed: int = 0


@dataclass(frozen=True)
class DiagnoseParams:
    """The diagnose stage: how many validation targets every measure uses, and the longest context."""
    targets: int = field(default=32, metadata=_spec(ge=1))        # one sample of target positions for every model
    max_context: int = field(default=256, metadata=_spec(ge=2))   # cap of the curves (stream models; windows stop at theirs)
    seed: int = 0


@dataclass(frozen=True)
class MlflowParams:
    experiment: str = "seqlab"
    # relative gain in test bits per character a version needs over the champion to be proposed
    # (pipeline.tracking.registry.judge): smaller gains are run-to-run noise
    promotion_margin: float = field(default=0.005, metadata=_spec(ge=0.0, lt=1.0))


@dataclass(frozen=True)
class ModelEntry:
    """One entry of ``models`` as config sees it: its family's name, its ``train`` overrides, and the
    whole mapping (``raw``), which only the family can validate (``pipeline.models.catalog``)."""
    family: str
    train: dict
    raw: dict

    @classmethod
    def from_raw(cls, raw: Any, path: str) -> "ModelEntry":
        if not isinstance(raw, dict):
            raise SeqlabError(f"params: {path}: expected a mapping, got {raw!r}")
        family = raw.get("family")
        if not isinstance(family, str) or not family:
            raise SeqlabError(f"params: {path}.family: required: a built-in family (e.g. lstm) or module:Name "
                              "(a family from your own code)")
        train = check_value(raw["train"], dict, f"{path}.train") if "train" in raw else {}
        return cls(family, train, dict(raw))


BASELINE = "ngram"   # the n-gram's model name (models/ngram, metrics/ngram.json, seqlab-ngram)


@dataclass(frozen=True)
class Params:
    seed: int = 1337
    data: DataParams = field(default_factory=DataParams)
    ngram: NgramParams = field(default_factory=NgramParams)
    train: TrainParams = field(default_factory=TrainParams)
    models: dict[str, ModelEntry] = field(default_factory=dict)
    eval: EvalParams = field(default_factory=EvalParams)
    generate: GenerateParams = field(default_factory=GenerateParams)
    diagnose: DiagnoseParams = field(default_factory=DiagnoseParams)
    mlflow: MlflowParams = field(default_factory=MlflowParams)

    @property
    def compared_models(self) -> tuple[str, ...]:
        """Every model the lab compares: the n-gram baseline (section ``ngram``), then ``models``."""
        return (BASELINE, *self.models)

    def model(self, arch: str) -> ModelEntry:
        if arch not in self.models:
            raise SeqlabError(f"params.yaml: models: unknown architecture {arch!r}; "
                              f"defined: {', '.join(sorted(self.models)) or 'none'}")
        return self.models[arch]

    def train_for(self, arch: str) -> TrainParams:
        """The `train` section with the model's own `train` overrides applied (validated)."""
        overrides = self.model(arch).train
        if not overrides:
            return self.train
        merged = {**dataclasses.asdict(self.train), **overrides}
        return build(TrainParams, merged, f"models.{arch}.train")


def _cross_checks(p: Params) -> None:
    split = p.data.split
    if len(split) != 3 or any(s <= 0 for s in split) or abs(sum(split) - 1) > 1e-6:
        raise SeqlabError(f"params: data.split: expected three positive fractions summing to 1 "
                          f"(train, valid, test), got {split}")
    if p.data.corpus.startswith("https://") and not p.data.sha256:
        raise SeqlabError("params: data.sha256: required when data.corpus is an https URL")
    marker = p.data.score_after
    if marker is not None and (not marker.strip() or "\n" in marker
                               or (p.data.tokenizer != "char" and len(marker.split()) != 1)):
        raise SeqlabError(f"params: data.score_after: {marker!r}: expected a marker that a line holds before the text "
                          "to score: no line break, and for the word and wordpiece tokenizers one word without spaces")
    if p.data.examples == "pairs" and (marker is not None or p.data.tokenizer != "char"):
        raise SeqlabError("params: data.examples: pairs scores each line's target (after its tab), its source read "
                          f"as characters; expected data.score_after null (got {marker!r}) and data.tokenizer char "
                          f"(got {p.data.tokenizer!r}); for a target of word tokens set data.target_tokenizer: word, "
                          "for word sources write 'source MARK target' lines and use examples: lines with "
                          "score_after: MARK")
    if p.data.target_tokenizer != "char" and p.data.examples != "pairs":
        raise SeqlabError(f"params: data.target_tokenizer: {p.data.target_tokenizer!r} applies to data.examples: "
                          "pairs only (the text after each line's tab); set it to char")
    if p.data.max_target_chars is not None and p.data.examples != "pairs":
        raise SeqlabError("params: data.max_target_chars: applies to data.examples: pairs only; set it to null")
    if marker is not None and p.data.lowercase and marker != marker.lower():
        raise SeqlabError(f"params: data.score_after: {marker!r} is not lowercase, but data.lowercase is true: "
                          "the lowercased text would never hold it")
    if not p.models:
        raise SeqlabError("params: models: expected at least one model, e.g. models: {lstm: {family: lstm}}")
    for arch in p.models:
        # the name becomes a folder, a DVC stage (train@<name>), a file and a registered model name
        if not NAME.fullmatch(str(arch)):
            raise SeqlabError(f"params: models: {arch!r} is not a usable model name; expected letters, digits, "
                              "'_' or '-', starting with a letter or digit, at most 64 characters")
        if arch == BASELINE:
            raise SeqlabError(f"params: models: {arch!r} is the name of the n-gram baseline (section {BASELINE}); "
                              "choose another name")
        p.train_for(arch)  # validates the model's own train overrides
    if not NAME.fullmatch(p.mlflow.experiment):
        raise SeqlabError(f"params: mlflow.experiment: {p.mlflow.experiment!r} is not a usable experiment name; "
                          "expected letters, digits, '_' or '-', starting with a letter or digit, at most 64 characters")


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    try:
        p = build(Params, raw, "")
        _cross_checks(p)
    except SeqlabError as e:
        raise SeqlabError(str(e).replace("params:", f"{source}:", 1)) from None
    return p


def deep_merge(base: dict, overlay: dict) -> dict:
    """Overlay a preset onto params: mappings merge key by key, everything else is replaced."""
    out = dict(base)
    for k, v in overlay.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping holding the same key twice (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    try:
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise SeqlabError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise SeqlabError(f"{path}: not valid YAML: {e}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_yaml(Path(path)), str(path))
