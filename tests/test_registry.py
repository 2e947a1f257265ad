"""The family registry: every family declares what seqlab asks of it, and nothing else names one."""
import dataclasses
import sys

import pytest

from pipeline.errors import SeqlabError
from pipeline.models.family import PROTOCOLS, STREAM, WINDOW, Family, ModelParams, matmul_weights
from pipeline.models.catalog import builtin_families, code_paths, get_family, parse_model
from tests.conftest import ROOT
from tests.family_cases import USER_FAMILY as EXTERNAL, families as all_families


# what the shipped built-in families declare (a family registered later is checked by the loops)
SHIPPED = {"rnn": STREAM, "lstm": STREAM, "gru": STREAM, "conv": WINDOW, "transformer": WINDOW}


def test_builtin_families_declare_their_contract():
    families = builtin_families()
    assert list(families)[:len(SHIPPED)] == list(SHIPPED)      # in the order of FAMILY_MODULES
    for name, family in families.items():
        assert isinstance(family, Family) and family.name == name
        assert issubclass(family.params, ModelParams) and dataclasses.is_dataclass(family.params)
        assert family.protocol in PROTOCOLS
        cfg = family.params(family=name)          # every parameter has a default
        family.check(cfg)
    assert {n: families[n].protocol for n in SHIPPED} == SHIPPED


def test_compile_and_precision_policy():
    families = builtin_families()
    assert all(f.jit_compile(on_gpu=False) for f in families.values())             # XLA on a CPU
    assert {n for n in SHIPPED if not families[n].jit_compile(on_gpu=True)} == {"lstm", "gru"}  # cuDNN
    assert all(families[n].mixed_precision for n in SHIPPED)


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


@pytest.mark.parametrize("name", all_families())
def test_flops_per_token(name):
    pytest.importorskip("keras")
    from pipeline.models import build_model
    from tests.family_cases import image_of, marker_of
    from tests.tiny_models import tiny_cfg
    cfg = tiny_cfg(name)
    model = build_model(cfg, 30, 16, marker_of(name), image_of(name, 30))
    family = get_family(name)
    flops = family.flops_per_token(model, cfg, 16)
    weights = matmul_weights(model)
    assert 0 < weights < model.count_params()            # embedding tables and biases excluded
    if name == "transformer":
        assert flops == 6.0 * weights + 12.0 * cfg.layers * cfg.units * 16      # attention
    elif type(family).flops_per_token is Family.flops_per_token:
        assert flops == 6.0 * weights                    # the default: 6 per weight applied once per token
    else:
        assert flops >= 6.0 * weights                    # a family's own estimate counts at least the weights
