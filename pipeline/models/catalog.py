"""The family catalog: from the ``family`` of a params.yaml model entry to its :class:`Family`.

Built-in families are found in the family modules listed here (each exports ``FAMILIES``); a
``family: some.module:Name`` loads ``Name`` from the user's own module (in the repo, whose root is
on ``sys.path`` for every stage, or anywhere on ``PYTHONPATH``). ``Name`` is a Family subclass or
instance. Importing a family module must stay cheap (no Keras at import time): params.yaml is
validated in every stage.
"""
from __future__ import annotations

import difflib
import functools
import importlib
import sys
from pathlib import Path
from typing import Any

from pipeline.config.params import Params
from pipeline.config.schema import build
from pipeline.errors import SeqlabError
from pipeline.models.family import PROTOCOLS, Family, ModelParams, ParamError

FAMILY_MODULES = ("pipeline.models.recurrent", "pipeline.models.conv", "pipeline.models.transformer",
                  "pipeline.models.seq2seq", "pipeline.models.pixelcnn")


@functools.cache
def builtin_families() -> dict[str, Family]:
    """Name -> family of every built-in family, in the order of :data:`FAMILY_MODULES`."""
    out: dict[str, Family] = {}
    for module in FAMILY_MODULES:
        for family in importlib.import_module(module).FAMILIES:
            out[family.name] = family
    return out


def _expected() -> str:
    return ", ".join(builtin_families()) + " or module:Name (a family from your own code)"


def _external(spec: str, path: str) -> Family:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SeqlabError(f"params: {path}: expected {_expected()}, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise SeqlabError(f"params: {path}: cannot import module {module_name!r} ({e}); a family from your "
                          "own code is module:Name, with the module in the repo or on PYTHONPATH") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise SeqlabError(f"params: {path}: module {module_name!r} ({module.__file__}) has no attribute {attr!r}")
    family = obj() if isinstance(obj, type) and issubclass(obj, Family) else obj
    if not isinstance(family, Family):
        raise SeqlabError(f"params: {path}: {spec!r} is {type(obj).__name__}, not a seqlab family "
                          "(a subclass of pipeline.models.family.Family)")
    if not (isinstance(family.params, type) and issubclass(family.params, ModelParams)):
        raise SeqlabError(f"params: {path}: {spec!r}.params must be a dataclass subclassing "
                          "pipeline.models.family.ModelParams")
    if family.protocol not in PROTOCOLS:
        raise SeqlabError(f"params: {path}: {spec!r}.protocol must be one of {', '.join(PROTOCOLS)}, "
                          f"got {family.protocol!r}")
    return family


_loaded: dict[str, Family] = {}   # module:Name -> its family, loaded once per process


def _get(name: str, path: str) -> Family:
    if ":" in name:
        if name not in _loaded:
            _loaded[name] = _external(name, path)
        return _loaded[name]
    families = builtin_families()
    if name not in families:
        hint = difflib.get_close_matches(name, list(families), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise SeqlabError(f"params: {path}: expected one of {_expected()}, got {name!r}{extra}")
    return families[name]


def get_family(name: str, path: str = "family") -> Family:
    """The family called ``name`` in params.yaml; ``path`` names the key in errors."""
    return _get(str(name), path)


def family_of(cfg: ModelParams) -> Family:
    return get_family(cfg.family)


def parse_model(raw: Any, path: str) -> ModelParams:
    """A params.yaml model entry: its family's own parameters, type-checked and cross-checked."""
    if not isinstance(raw, dict):
        raise SeqlabError(f"params: {path}: expected a mapping, got {raw!r}")
    name = raw.get("family")
    if not isinstance(name, str) or not name:
        raise SeqlabError(f"params: {path}.family: required: {_expected()}")
    family = get_family(name, f"{path}.family")
    cfg = build(family.params, raw, path, what=f" for family {name!r}")
    try:
        family.check(cfg)
    except ParamError as e:
        raise SeqlabError(f"params: {path}.{e.key}: {e.message}") from None
    return cfg


def model_config(p: Params, arch: str, source: str = "params.yaml") -> ModelParams:
    """Model ``arch`` of ``p`` as its family's typed parameters, validated against that family
    (and against the data: an encoder-decoder needs paired examples)."""
    try:
        cfg = parse_model(p.model(arch).raw, f"models.{arch}")
    except SeqlabError as e:
        raise SeqlabError(str(e).replace("params:", f"{source}:", 1)) from None
    if family_of(cfg).reads_source and p.data.examples != "pairs":
        raise SeqlabError(f"{source}: models.{arch}.family: {cfg.family!r} is an encoder-decoder, it reads a "
                          f"source: expected data.examples: pairs (source<TAB>target lines), got "
                          f"{p.data.examples!r}")
    return cfg


def model_configs(p: Params, source: str = "params.yaml") -> dict[str, ModelParams]:
    """Every model of ``p`` validated against its family: the check of params.yaml that config,
    which imports no model code, leaves to the families."""
    return {arch: model_config(p, arch, source) for arch in p.models}


def model_params(config: dict, where: str = "model config") -> ModelParams:
    """A model's parameters from their dict form (a saved network's ``config.json``)."""
    try:
        return parse_model(config, "model")
    except SeqlabError as e:
        raise SeqlabError(f"{where}: {str(e).removeprefix('params: ')}") from None


def code_paths(cfg: ModelParams) -> list[Path]:
    """Source a model's family needs besides ``pipeline/``: the top package (or module file) of a
    family from the user's own code, so that a logged model loads where that code is absent."""
    if ":" not in cfg.family:
        return []
    top = cfg.family.partition(":")[0].split(".")[0]
    module = sys.modules.get(top) or importlib.import_module(top)
    paths = getattr(module, "__path__", None)
    if paths:   # a package (regular or namespace): ship its folder
        return [Path(next(iter(paths))).resolve()]
    return [Path(module.__file__).resolve()]
