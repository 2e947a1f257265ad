"""params.yaml validation: every bad key, type or value is named with what was expected."""
import pytest

from pipeline.errors import SeqlabError
from pipeline.config.params import deep_merge, load_params, parse_params
from pipeline.models.catalog import model_config, model_configs
from tests.conftest import ROOT


def test_repo_params_load():
    p = load_params(ROOT / "params.yaml")
    assert set(p.models) == {"rnn", "lstm", "gru", "conv", "transformer"}
    assert p.train_for("transformer").weight_decay != p.train.weight_decay  # per-model override applies
    assert p.train_for("conv") == p.train  # no override: the shared section


@pytest.mark.parametrize("raw, message", [
    ({"trian": {}}, "unknown key 'trian'; did you mean 'train'?"),
    ({"train": {"batch_sise": 3}}, "did you mean 'batch_size'?"),
    ({"train": {"batch_size": "32"}}, "train.batch_size: expected an integer, got '32'"),
    ({"train": {"batch_size": 0}}, "train.batch_size: expected a value >= 1, got 0"),
    ({"train": {"learning_rate": True}}, "train.learning_rate: expected a number"),
    ({"ngram": {"order": 11}}, "ngram.order: expected a value <= 10"),
    ({"data": {"tokenizer": "chars"}}, "did you mean 'char'?"),
    ({"data": {"split": [0.8, 0.1]}}, "data.split: expected three positive fractions"),
    ({"data": {"corpus": "https://example.org/x.txt"}}, "data.sha256: required"),
    ({"models": {"x": {"family": "lstmm"}}}, "models.x.family: expected one of"),
    ({"models": {"x": {"family": "transformer", "units": 10, "heads": 4}}}, "not divisible by heads"),
    ({"models": {"x": {"family": "lstm", "train": {"batch_size": -2}}}}, "models.x.train.batch_size: expected a value >= 1"),
    ({"models": {"x": {"family": "conv", "dilations": ["a"]}}}, "models.x.dilations[0]: expected an integer"),
    ({"models": {"x": {"family": "conv", "dilations": []}}}, "models.x.dilations: expected a non-empty list"),
    ({"models": {"x": {"family": "lstm", "recurrent_init": "torch"}}}, "models.x.recurrent_init: expected one of"),
    ({"models": {"x": {"family": "conv", "recurrent_init": "uniform"}}},
     "unknown key 'models.x.recurrent_init' for family 'conv'"),
    ({"models": {"x": {"family": "transformer", "dilations": [1]}}}, "for family 'transformer'"),
    ({"models": {"x": {"family": "gru", "unit": 3}}}, "did you mean 'units'?"),
    ({"models": {"x": {"units": 3}}}, "models.x.family: required"),
    ({"models": {"x": {"family": 3}}}, "models.x.family: required"),
    ({"models": {"x": {"family": "no_such_module:Fam"}}}, "cannot import module 'no_such_module'"),
    ({"models": {"x": {"family": "families.window_mlp:Nope"}}}, "has no attribute 'Nope'"),
    ({"models": {"x": {"family": "families.window_mlp:spec"}}}, "not a seqlab family"),
    ({"models": {"x": {"family": "families.window_mlp"}}}, "expected one of rnn, lstm"),
    ({"models": {"x": {"family": "families.window_mlp:WindowMLP", "context": 0}}}, "models.x.context: expected a value >= 1"),
    ({"models": {"x": {"family": "families.window_mlp:WindowMLP", "context": 2000}}}, "models.x.context: 2000 tokens"),
    ({"models": []}, "models: expected a mapping"),
    ({"models": {}}, "models: expected at least one model"),
    ({"train": {"epochs": 2}}, "models: expected at least one model"),
    ({"models": {"my model": {"family": "lstm"}}}, "models: 'my model' is not a usable model name"),
    ({"models": {"../x": {"family": "lstm"}}}, "models: '../x' is not a usable model name"),
    ({"models": {"x": {"family": "lstm"}}, "mlflow": {"experiment": "a/b"}},
     "mlflow.experiment: 'a/b' is not a usable experiment name"),
    ([1, 2], "expected a mapping"),
])
def test_bad_params_are_named(raw, message):
    with pytest.raises(SeqlabError) as e:
        model_configs(parse_params(raw, "params.yaml"), "params.yaml")   # config's checks, then each family's
    assert message in str(e.value)
    assert str(e.value).startswith("params.yaml")


def test_external_family_is_validated_against_its_own_fields():
    p = parse_params({"models": {"mlp": {"family": "families.window_mlp:WindowMLP", "context": 3, "direct": True,
                                         "train": {"epochs": 2}}}})
    m = model_config(p, "mlp")
    assert (m.context, m.direct, m.hidden) == (3, True, 256) and p.train_for("mlp").epochs == 2
    assert type(m).__name__ == "WindowMLPParams"


def test_unknown_architecture_is_an_error():
    p = parse_params({"models": {"lstm": {"family": "lstm"}}})
    with pytest.raises(SeqlabError, match="unknown architecture 'tranformer'"):
        p.model("tranformer")


def test_int_accepted_for_float_and_deep_merge():
    p = parse_params({"train": {"learning_rate": 1}, "models": {"x": {"family": "gru"}}})
    assert p.train.learning_rate == 1.0 and isinstance(p.train.learning_rate, float)
    merged = deep_merge({"train": {"epochs": 3, "seq_len": 64}, "seed": 1}, {"train": {"epochs": 9}})
    assert merged == {"train": {"epochs": 9, "seq_len": 64}, "seed": 1}


def test_a_key_given_twice_is_an_error_with_both_lines(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("models:\n  lstm: {family: lstm}\ntrain:\n  epochs: 2\n  epochs: 3\n")
    with pytest.raises(SeqlabError, match=r"duplicate key 'epochs' \(first at line 4\)") as e:
        load_params(path)
    assert str(e.value).startswith(f"{path}: not valid YAML") and "line 5" in str(e.value)


def test_the_first_stage_stops_a_run_on_a_bad_model_parameter(tmp_path):
    """config alone cannot validate a family's parameters; the corpus stage, first at every repro,
    does, so a typo stops `dvc repro` before any data is prepared, and nothing is written."""
    import shutil
    import subprocess
    import sys

    import yaml

    from tests.repo_copy import tool_env
    for folder in ("pipeline", "stages"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"models": {"x": {"family": "gru", "units": 0}}}))
    p = subprocess.run([sys.executable, "-m", "stages.corpus"], cwd=tmp_path, env=tool_env(),
                       capture_output=True, text=True)
    assert p.returncode != 0 and "params.yaml: models.x.units: expected a value >= 1, got 0" in p.stderr, p.stderr
    assert not (tmp_path / "data").exists()
