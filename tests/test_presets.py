"""Presets: every shipped preset validates; overlays replace `models`; `make run PRESET=` keeps a backup."""
import subprocess
import sys

import pytest
import yaml

from pipeline.errors import SeqlabError
from pipeline.config.params import read_yaml
from pipeline.config.presets import apply_preset, available, preset_overlay, preset_params
from pipeline.models.catalog import model_config, model_configs
from tests.conftest import ROOT
from tests.repo_copy import tool_env


TASK_PRESETS = {"dates": "builtin:dates", "g2p": "builtin:cmudict"}   # a task: its own paired corpus
IMAGE_PRESETS = {"digits": "builtin:digits", "mnist": "builtin:mnist"}  # images: every family but the encoder-decoders
OWN_CORPUS = TASK_PRESETS | IMAGE_PRESETS | {"folk": "builtin:abc-folk"}


@pytest.mark.parametrize("name", available())
def test_shipped_presets_validate(name):
    merged, params = preset_params(name, read_yaml(ROOT / "params.yaml"))
    assert params.models and model_configs(params), name   # every model valid for its family
    # a model preset trains on the user's corpus (data.corpus); a task preset names its own
    corpus = OWN_CORPUS.get(name, read_yaml(ROOT / "params.yaml")["data"]["corpus"])
    assert merged["data"]["corpus"] == corpus
    if name in TASK_PRESETS:      # every family that applies takes part, the encoder-decoders included
        from pipeline.models.catalog import builtin_families
        assert {m.family for m in model_configs(params).values()} == {
            n for n, f in builtin_families().items() if not f.reads_image}
        assert params.data.examples == "pairs"
    if name in IMAGE_PRESETS:
        from pipeline.models.catalog import builtin_families
        assert {m.family for m in model_configs(params).values()} == {
            n for n, f in builtin_families().items() if not f.reads_source}


def test_required_presets_exist():
    assert {"nanogpt-baby", "lstm-5min", "shakespeare-best", *OWN_CORPUS} <= set(available())


def test_nanogpt_baby_matches_the_reference_configuration():
    _, p = preset_params("nanogpt-baby", read_yaml(ROOT / "params.yaml"))
    (arch,) = p.models
    m, t = model_config(p, arch), p.train_for(arch)
    assert (m.family, m.layers, m.heads, m.units, m.dropout) == ("transformer", 4, 4, 128, 0.0)
    assert (t.seq_len, t.batch_size, t.epochs * t.steps_per_epoch) == (64, 12, 2000)
    assert (t.learning_rate, t.learning_rate * t.min_lr_ratio, t.warmup_steps) == (1e-3, pytest.approx(1e-4), 100)
    assert (t.beta2, t.weight_decay) == (0.99, 0.1)


def test_overlay_merges_sections_and_replaces_models():
    base = {"train": {"epochs": 3, "seq_len": 64}, "models": {"a": {"family": "rnn"}, "b": {"family": "gru"}}}
    out = apply_preset(base, {"train": {"epochs": 9}, "models": {"c": {"family": "lstm"}}})
    assert out == {"train": {"epochs": 9, "seq_len": 64}, "models": {"c": {"family": "lstm"}}}


def test_unknown_preset_has_a_did_you_mean():
    with pytest.raises(SeqlabError, match="did you mean 'lstm-5min'"):
        preset_overlay("lstm-5mn")


def test_make_run_preset_writes_params_and_keeps_a_backup(tmp_path):
    for rel in ("params.yaml",):
        (tmp_path / rel).write_text((ROOT / rel).read_text())
    for d in ("pipeline", "stages", "presets"):
        subprocess.run(["cp", "-r", str(ROOT / d), str(tmp_path / d)], check=True)
    original = (tmp_path / "params.yaml").read_text()
    p = subprocess.run([sys.executable, "-m", "stages.preset", "nanogpt-baby"], cwd=tmp_path, env=tool_env(),
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "params.yaml.bak").read_text() == original
    written = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert list(written["models"]) == ["transformer"] and written["train"]["seq_len"] == 64
    bad = subprocess.run([sys.executable, "-m", "stages.preset", "nope"], cwd=tmp_path, env=tool_env(),
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "preset 'nope'" in bad.stderr
