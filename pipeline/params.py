"""Load and validate ``params.yaml`` into typed objects before any work starts.

Every key is checked against the dataclasses below: unknown keys get a did-you-mean, wrong types
and out-of-range values name the key path and what was expected. A preset (``presets/<name>.yaml``)
is a partial overlay with the same schema.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import SeqlabError

RECURRENT_FAMILIES = ("rnn", "lstm", "gru")
FAMILIES = RECURRENT_FAMILIES + ("conv", "transformer")
TOKENIZERS = ("char", "word", "wordpiece")


def _spec(**kw) -> dict:
    """Field metadata: ge/gt/le/lt bounds, choices, and a short description for errors."""
    return kw


@dataclass(frozen=True)
class DataParams:
    corpus: str = "builtin:python-docs"
    sha256: str | None = None
    tokenizer: str = field(default="char", metadata=_spec(choices=TOKENIZERS))
    vocab_size: int = field(default=8000, metadata=_spec(ge=8))
    lowercase: bool = False
    split: list[float] = field(default_factory=lambda: [0.9, 0.05, 0.05])


@dataclass(frozen=True)
class NgramParams:
    order: int = field(default=5, metadata=_spec(ge=1, le=10))


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


@dataclass(frozen=True)
class ModelParams:
    family: str = field(default="lstm", metadata=_spec(choices=FAMILIES))
    embed_dim: int = field(default=64, metadata=_spec(ge=1))
    units: int = field(default=256, metadata=_spec(ge=1))
    layers: int = field(default=2, metadata=_spec(ge=1))
    heads: int = field(default=4, metadata=_spec(ge=1))
    ff_dim: int = field(default=0, metadata=_spec(ge=0))
    kernel_size: int = field(default=2, metadata=_spec(ge=1))
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    dropout: float = field(default=0.0, metadata=_spec(ge=0, lt=1))
    embed_init: str = field(default="normal", metadata=_spec(choices=("default", "normal")))
    recurrent_init: str = field(default="default", metadata=_spec(choices=("default", "uniform")))
    tie_embeddings: bool = False
    train: dict = field(default_factory=dict)  # overrides of the `train` section for this model


@dataclass(frozen=True)
class EvalParams:
    batch_size: int = field(default=32, metadata=_spec(ge=1))
    stride_fraction: float = field(default=0.5, metadata=_spec(gt=0, le=1))


@dataclass(frozen=True)
class GenerateParams:
    prompts: list[str] = field(default_factory=lambda: ["The ", "A function "])
    max_tokens: int = field(default=200, metadata=_spec(ge=1))
    temperature: float = field(default=0.8, metadata=_spec(ge=0))
    top_k: int = field(default=0, metadata=_spec(ge=0))
    top_p: float = field(default=0.95, metadata=_spec(gt=0, le=1))
    seed: int = 0


@dataclass(frozen=True)
class MlflowParams:
    experiment: str = "seqlab"


@dataclass(frozen=True)
class Params:
    seed: int = 1337
    data: DataParams = field(default_factory=DataParams)
    ngram: NgramParams = field(default_factory=NgramParams)
    train: TrainParams = field(default_factory=TrainParams)
    models: dict[str, ModelParams] = field(default_factory=dict)
    eval: EvalParams = field(default_factory=EvalParams)
    generate: GenerateParams = field(default_factory=GenerateParams)
    mlflow: MlflowParams = field(default_factory=MlflowParams)

    def model(self, arch: str) -> ModelParams:
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
        return _build(TrainParams, merged, f"models.{arch}.train")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin in (typing.Union, getattr(__import__('types'), 'UnionType', None)):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false",
            type(None): "null", dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


def _check_value(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise SeqlabError(f"params: {path}: expected {_describe(tp)}, got {value!r}")
        return [_check_value(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is not None and type(None) in typing.get_args(tp):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _check_value(value, inner, path)
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    elif tp is dict:
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        raise SeqlabError(f"params: {path}: expected {_describe(tp)}, got {value!r}")
    return value


def _check_range(value: Any, meta: dict, path: str) -> None:
    if "choices" in meta and value not in meta["choices"]:
        hint = difflib.get_close_matches(str(value), meta["choices"], n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise SeqlabError(f"params: {path}: expected one of {', '.join(meta['choices'])}, got {value!r}{extra}")
    for key, op, word in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                          ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
        if key in meta and not op(value, meta[key]):
            raise SeqlabError(f"params: {path}: expected a value {word} {meta[key]}, got {value!r}")


def _build(cls: type, raw: Any, path: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SeqlabError(f"params: {path or 'top level'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        key = unknown[0]
        hint = difflib.get_close_matches(str(key), list(fields), n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {', '.join(fields)}"
        where = f"{path}.{key}" if path else str(key)
        raise SeqlabError(f"params: unknown key {where!r}{extra}")
    values = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name not in raw:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, raw[name], sub)
        elif typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            if not isinstance(raw[name], dict):
                raise SeqlabError(f"params: {sub}: expected a mapping of name -> settings, got {raw[name]!r}")
            values[name] = {str(k): _build(typing.get_args(tp)[1], v, f"{sub}.{k}") for k, v in raw[name].items()}
        else:
            values[name] = _check_value(raw[name], tp, sub)
            _check_range(values[name], dict(f.metadata), sub)
    return cls(**values)


def _cross_checks(p: Params) -> None:
    split = p.data.split
    if len(split) != 3 or any(s <= 0 for s in split) or abs(sum(split) - 1) > 1e-6:
        raise SeqlabError(f"params: data.split: expected three positive fractions summing to 1 "
                          f"(train, valid, test), got {split}")
    if p.data.corpus.startswith("https://") and not p.data.sha256:
        raise SeqlabError("params: data.sha256: required when data.corpus is an https URL")
    for arch, m in p.models.items():
        p.train_for(arch)  # validates the model's own train overrides
        if m.family == "transformer" and m.units % m.heads:
            raise SeqlabError(f"params: models.{arch}.units: {m.units} is not divisible by heads={m.heads}")
        if m.family == "conv" and (not m.dilations or any(d < 1 for d in m.dilations)):
            raise SeqlabError(f"params: models.{arch}.dilations: expected a non-empty list of integers >= 1")
        if m.recurrent_init != "default" and m.family not in RECURRENT_FAMILIES:
            raise SeqlabError(f"params: models.{arch}.recurrent_init: {m.recurrent_init!r} applies to the rnn, "
                              f"lstm and gru families only, not {m.family!r}; remove it")


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    try:
        p = _build(Params, raw, "")
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


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SeqlabError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise SeqlabError(f"{path}: not valid YAML: {e}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_yaml(Path(path)), str(path))
