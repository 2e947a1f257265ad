"""Named parameter presets: YAML overlays on ``params.yaml`` kept in ``presets/<name>.yaml``.

An overlay merges key by key, except ``models``: a preset that names models replaces the whole
section, because a preset chooses which networks run. The result is validated like params.yaml.
"""
from __future__ import annotations

import difflib
from pipeline.paths import PRESETS

from pipeline.errors import SeqlabError
from pipeline.config.params import Params, deep_merge, parse_params, read_yaml




def available() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def preset_overlay(name: str) -> dict:
    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        hint = difflib.get_close_matches(name, available(), n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else ""
        raise SeqlabError(f"preset {name!r}: no file {path}{extra} (available: {', '.join(available())})")
    overlay = read_yaml(path) or {}
    if not isinstance(overlay, dict):
        raise SeqlabError(f"{path}: expected a mapping of params.yaml sections")
    return overlay


def apply_preset(base: dict, overlay: dict) -> dict:
    merged = deep_merge(base, {k: v for k, v in overlay.items() if k != "models"})
    if "models" in overlay:
        merged["models"] = overlay["models"]
    return merged


def preset_params(name: str, base: dict, source: str = "params.yaml") -> tuple[dict, Params]:
    """The merged raw mapping and its validated form."""
    merged = apply_preset(base, preset_overlay(name))
    return merged, parse_params(merged, f"{source} + presets/{name}.yaml")
