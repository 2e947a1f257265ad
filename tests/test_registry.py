"""The family registry: every family declares what seqlab asks of it, and nothing else names one."""
import dataclasses
import sys

import pytest

from pipeline.errors import SeqlabError
from pipeline.models.family import PROTOCOLS, STREAM, WINDOW, Family, ModelParams, matmul_weights
from pipeline.models.catalog import builtin_families, code_paths, get_family, parse_model
from tests.conftest import ROOT

EXTERNAL = "families.window_mlp:WindowMLP"


def test_builtin_families_declare_their_contract():
    families = builtin_families()
    assert list(families) == ["rnn", "lstm", "gru", "conv", "transformer"]
    for name, family in families.items():
        assert isinstance(family, Family) and family.name == name
        assert issubclass(family.params, ModelParams) and dataclasses.is_dataclass(family.params)
        assert family.protocol in PROTOCOLS
        cfg = family.params(family=name)          # every parameter has a default
        family.check(cfg)
    assert {n for n, f in families.items() if f.protocol == STREAM} == {"rnn", "lstm", "gru"}
    assert {n for n, f in families.items() if f.protocol == WINDOW} == {"conv", "transformer"}


def test_compile_and_precision_policy():
    families = builtin_families()
    assert all(f.jit_compile(on_gpu=False) for f in families.values())             # XLA on a CPU
    assert {n for n, f in families.items() if not f.jit_compile(on_gpu=True)} == {"lstm", "gru"}  # cuDNN
    assert all(f.mixed_precision for f in families.values())


def test_importing_the_registry_and_validating_params_needs_no_keras():
    import subprocess
    code = ("import sys; from pipeline.config.params import load_params; load_params('params.yaml');"
            "from pipeline.models.catalog import get_family; get_family('families.window_mlp:WindowMLP');"
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_external_family_loads_by_module_and_name():
    family = get_family(EXTERNAL)
    assert family is get_family(EXTERNAL)                   # loaded once
    assert family.protocol == WINDOW and family.params.__name__ == "WindowMLPParams"
    cfg = parse_model({"family": EXTERNAL, "context": 3}, "models.mlp")
    assert cfg.context == 3 and cfg.family == EXTERNAL
    assert code_paths(cfg) == [(ROOT / "families").resolve()]       # shipped with its logged models
    assert code_paths(parse_model({"family": "gru"}, "models.gru")) == []


def test_external_family_errors_name_the_key():
    with pytest.raises(SeqlabError, match=r"models.x.family: .*not a seqlab family"):
        parse_model({"family": "families.window_mlp:dataclass"}, "models.x")
    with pytest.raises(SeqlabError, match=r"unknown key 'models.x.units' for family 'families.window_mlp:WindowMLP'"):
        parse_model({"family": EXTERNAL, "units": 3}, "models.x")


def test_flops_per_token():
    pytest.importorskip("keras")
    from pipeline.models import build_model
    from tests.tiny_models import tiny_cfg
    for name in ("lstm", "conv", "transformer", EXTERNAL):
        cfg = tiny_cfg(name)
        model = build_model(cfg, 30, 16)
        flops = get_family(name).flops_per_token(model, cfg, 16)
        weights = matmul_weights(model)
        assert 0 < weights < model.count_params()            # embedding tables and biases excluded
        extra = 12.0 * cfg.layers * cfg.units * 16 if name == "transformer" else 0.0   # attention
        assert flops == 6.0 * weights + extra, name
