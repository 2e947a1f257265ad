"""End to end: the real `dvc repro` on tiny params in a copy of the repo, then MLflow and DVC checks.

One module-scoped run feeds every check (each DVC stage pays TensorFlow's start-up once).
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.repo_copy import ARCHS, EXTERNAL, make_tiny_repo, run, tool_env


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    repo = make_tiny_repo(tmp_path_factory.mktemp("e2e") / "repo")
    t0 = time.perf_counter()
    first = run(["dvc", "repro"], repo)
    seconds = time.perf_counter() - t0
    proposed = (repo / "reports" / "comparison.md").read_text()
    promoted = run([sys.executable, "-m", "pipeline.promote"], repo).stdout     # what `make run` does next
    first.stdout += f"\n=== comparison.md after dvc repro\n{proposed}\n=== promote\n{promoted}"
    # commit the results, as a user does, so that `dvc exp run --temp` starts from them
    run(["git", "-c", "user.name=seqlab-test", "-c", "user.email=test@example.org", "add", "-A"], repo)
    run(["git", "-c", "user.name=seqlab-test", "-c", "user.email=test@example.org", "commit", "-q", "-m", "repro"],
        repo)
    return repo, first, seconds


def test_outputs(repro):
    repo, first, _ = repro
    prepared = repo / "data" / "prepared"
    assert {p.name for p in prepared.iterdir()} >= {"train.npy", "valid.npy", "test.npy", "vocab.json", "stats.json"}
    vocab = json.loads((prepared / "vocab.json").read_text())
    assert vocab["tokenizer"] == "char" and "options" in vocab
    keys = {"valid_ppl", "valid_bpc", "test_ppl", "test_bpc", "parameters", "train_seconds"}
    scored, protocols = set(), {}
    for model in ("ngram",) + ARCHS:
        m = json.loads((repo / "metrics" / f"{model}.json").read_text())
        assert keys <= set(m), model
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in m.values()), m  # numbers only
        assert 1 < m["valid_ppl"] < 200 and 0 < m["test_bpc"] < 10, (model, m)
        scored.add((m["valid_tokens"], m["test_tokens"]))
        provenance = json.loads((repo / "provenance" / f"{model}.json").read_text())
        assert provenance["data_hash"] and provenance["protocol"], provenance
        protocols[model] = provenance
        assert (repo / "reports" / "samples" / f"{model}.txt").read_text().count("=== prompt") == 1
        assert provenance["run_id"] and provenance["version"] == "1"
        if model != "ngram":
            assert m["train_seconds"] > 0 and m["train_tokens_per_second"] > 0
            hist = (repo / "plots" / model / "history.csv").read_text().splitlines()
            assert hist[0].startswith("epoch,step,tokens_seen,train_seconds,train_loss,valid_loss") and len(hist) == 3
    assert len(scored) == 1, f"models scored different token counts: {scored}"
    # the user's family is scored under the protocol of the built-in windowed families
    assert protocols["mlp"]["family"] == EXTERNAL
    window = {k: protocols["transformer"][k] for k in ("protocol", "window", "stride", "min_context")}
    assert {k: protocols["mlp"][k] for k in window} == window and window["protocol"] == "sliding-window"
    assert protocols["rnn"]["protocol"] == "stream"
    # the recurrent families train with the state carried (auto), the windowed ones on random windows
    assert {m: protocols[m]["train_state"] for m in ARCHS} == {
        "rnn": "carried", "lstm": "carried", "gru": "carried", "conv": "windows", "transformer": "windows",
        "mlp": "windows"}
    assert protocols["rnn"]["kept_epoch"] == 2
    table = (repo / "reports" / "comparison.md").read_text()
    for model in ("ngram",) + ARCHS:
        assert f"| {model} |" in table
    rows = json.loads((repo / "reports" / "comparison.json").read_text())["models"]
    assert len(rows) == 1 + len(ARCHS)
    assert (repo / "reports" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"


DIAGNOSED = {"effective_context_tokens", "order_sensitivity_tokens", "gradient_decay_per_token",
             "gradient_half_life_tokens", "full_context_tokens"}


def test_diagnostics_of_every_model(repro):
    repo, _, _ = repro
    table = (repo / "reports" / "properties.md").read_text()
    for model in ("ngram",) + ARCHS:
        m = json.loads((repo / "metrics" / "diagnostics" / f"{model}.json").read_text())
        assert DIAGNOSED <= set(m), model
        assert all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in m.values()), m
        assert 1 <= m["effective_context_tokens"] <= m["full_context_tokens"] and m["targets"] == 8, m
        assert (m["gradient_decay_per_token"] is None) == (model == "ngram"), m   # no gradient for the n-gram
        assert (m["attention_mean_distance_tokens"] is None) == (model != "transformer"), m
        assert f"| {model} |" in table
    assert json.loads((repo / "metrics" / "diagnostics" / "ngram.json").read_text())["full_context_tokens"] == 2
    for name in ("properties_curves.png", "properties_attention.png", "properties_alignment.png"):
        assert (repo / "reports" / name).read_bytes()[:4] == b"\x89PNG" and name in table
    shown = json.loads(run(["dvc", "plots", "show", "--json", "--split"], repo).stdout)
    points = shown["data"]["plots/diagnostics/context.csv"][0]["anchor_definitions"]["<DVC_METRIC_DATA>"]
    assert {p["arch"] for p in points} == {"ngram", *ARCHS}


def test_plots_overlay_every_architecture(repro):
    repo, _, _ = repro
    shown = json.loads(run(["dvc", "plots", "show", "--json", "--split"], repo).stdout)
    assert "errors" not in shown, shown["errors"]
    overlays = {"valid_loss_by_step": "step", "valid_loss_by_training_seconds": "train_seconds",
                "valid_loss_by_tokens_seen": "tokens_seen", "train_and_valid_loss": "step"}
    for plot_id, x in overlays.items():
        (plot,) = shown["data"][plot_id]
        assert plot["content"]["encoding"]["x"]["field"] == x
        assert plot["content"]["encoding"]["color"]["field"] == "arch"
        points = plot["anchor_definitions"]["<DVC_METRIC_DATA>"]
        assert {p["arch"] for p in points} == set(ARCHS), plot_id
        assert len(points) == 2 * len(ARCHS) * (2 if plot_id == "train_and_valid_loss" else 1)
    points = shown["data"]["train_and_valid_loss"][0]["anchor_definitions"]["<DVC_METRIC_DATA>"]
    assert {p["field"] for p in points} == {"train_loss", "valid_loss"}
    assert shown["data"]["reports/learning_curves.png"][0]["type"] == "image"
    out = repo / ".plots_html"
    run(["dvc", "plots", "show", "-o", str(out)], repo)
    html = (out / "index.html").read_text()
    assert "Validation loss against training tokens seen" in html and "learning_curves.png" in html


def test_metrics_diff_is_numbers_only(repro):
    repo, _, _ = repro
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    values = [v for rev in shown.values() for f in rev["data"].values() for v in f["data"].values()]
    assert values and all(isinstance(v, (int, float)) for v in values if v is not None)   # null: not applicable
    assert any(path.startswith("metrics/diagnostics/") for rev in shown.values() for path in rev["data"])


def test_mlflow_runs_versions_and_champion(repro):
    repo, first, _ = repro
    # dvc repro proposed every first version (challenger) and moved no champion; `make promote` did
    after_repro = first.stdout.split("=== comparison.md after dvc repro")[1].split("=== promote")[0]
    for model in ("ngram",) + ARCHS:
        assert f"| {model} |" in after_repro and "| proposed (first version) |" in after_repro
        assert (f"{model}: seqlab-{model} version 1: promoted (champion before: none; first version)"
                in first.stdout.split("=== promote")[1]), first.stdout[-3000:]
    import mlflow
    from mlflow import MlflowClient
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.get_experiment_by_name("seqlab")
    runs = client.search_runs([exp.experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert {"ngram", "data", "report", *ARCHS} <= set(by_name)
    # the experiment opens on its runs in the UI; the runs of one dvc repro share one tag
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert len({r.data.tags.get("seqlab.repro") for r in runs}) == 1 and runs[0].data.tags["seqlab.repro"]
    assert any(k.startswith("system/") for a in ARCHS for k in by_name[a].data.metrics), "system metrics of training"
    shipped = {a.path for a in client.list_artifacts(by_name["transformer"].info.run_id, "diagnose")}
    assert "diagnose/attention.csv" in shipped, shipped                 # the per-head numbers, as a table
    for arch in ARCHS:
        r = by_name[arch]
        assert "bpc/test" in r.data.metrics and r.data.tags["arch"] == arch
        assert not any(k.startswith("diagnose/attention_distance_layer") for k in r.data.metrics)   # a table
        assert r.data.tags["data_hash"] and "train.learning_rate" in r.data.params
        history = client.get_metric_history(r.info.run_id, "valid/loss")     # per epoch, at the optimizer step
        assert [m.step for m in history] == [6, 12], [(m.step, m.value) for m in history]
        # the corpus as dataset inputs, one per split the run used, with the data hash as digest
        inputs = {(d.dataset.name, d.dataset.digest, d.tags[0].value) for d in r.inputs.dataset_inputs}
        assert inputs == {(f"corpus.txt {split}", r.data.tags["data_hash"], split)
                          for split in ("train", "valid", "test")}, inputs
        assert r.data.params["resolved.precision"] in ("float32", "mixed_bfloat16") and (
            r.data.params["resolved.jit_compile"] == "False")                        # what ran, not "auto"
        versions = client.search_model_versions(f"name='seqlab-{arch}'")
        assert len(versions) == 1
        assert versions[0].tags["train.kept_epoch"] == "2" and r.data.params["resolved.state"] == (
            versions[0].tags["train.state"])   # which epoch, trained how
        assert client.get_model_version_by_alias(f"seqlab-{arch}", "champion").version == versions[0].version
    ngram = client.search_model_versions("name='seqlab-ngram'")         # the n-gram is registered too
    assert len(ngram) == 1 and ngram[0].run_id == by_name["ngram"].info.run_id
    assert client.get_model_version_by_alias("seqlab-ngram", "champion").tags["test_bpc"]
    # accepting against a store that lacks the versions provenance/ names moves nothing, in one line
    empty = repo.parent / "other-store.db"
    refused = subprocess.run([sys.executable, "-m", "pipeline.promote"], cwd=repo, capture_output=True, text=True,
                             env=tool_env() | {"MLFLOW_TRACKING_URI": f"sqlite:///{empty}"}, timeout=300)
    assert refused.returncode == 2 and "nothing was promoted" in refused.stderr, refused.stderr[-2000:]
    assert len(refused.stderr.strip().splitlines()) == 1 and str(empty) not in refused.stderr
    assert not MlflowClient(f"sqlite:///{empty}").search_registered_models()
    generator = mlflow.pyfunc.load_model(f"runs:/{by_name['gru'].info.run_id}/generator")
    out = generator.predict(["The "], params={"max_tokens": 5, "seed": 1})
    assert len(out["text"][0]) > 0  # the served text generator decodes


def test_champions_load_and_generate_outside_the_repo(repro, tmp_path):
    """The registered champion is the text generator, and it travels with its code (the user's
    family included): a fresh process, outside the repo and with nothing of seqlab on its path,
    loads `models:/seqlab-<arch>@champion` from the store alone and decodes."""
    repo, _, _ = repro
    script = (
        "import json, sys, mlflow\n"
        "assert not any('families' in p or 'pipeline' in p for p in sys.path if p), sys.path\n"
        f"mlflow.set_tracking_uri('sqlite:///{repo / 'mlflow.db'}')\n"
        "out = {}\n"
        "for arch in ('lstm', 'mlp', 'ngram'):\n"
        "    pf = mlflow.pyfunc.load_model(f'models:/seqlab-{arch}@champion')\n"
        "    out[arch] = pf.predict(['The '], params={'max_tokens': 12, 'seed': 1, 'temperature': 0.0})['text'][0]\n"
        "import families.window_mlp as m\n"
        "print(json.dumps({'text': out, 'module': m.__file__}))\n")
    p = run([sys.executable, "-c", script], tmp_path)
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert all(got["text"].values()), got
    shipped = Path(got["module"])                         # the logged copy of the family, not the repo's
    assert shipped != repo / "families" / "window_mlp.py" and shipped.parent.parent.name == "code", got
    # the Keras network (logits) is the training run's `model` artifact
    import mlflow
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    run_id = json.loads((repo / "provenance" / "lstm.json").read_text())["run_id"]
    assert mlflow.models.get_model_info(f"runs:/{run_id}/model").flavors.keys() >= {"keras"}
    version = mlflow.MlflowClient().get_model_version_by_alias("seqlab-lstm", "champion")
    assert version.run_id == run_id and "python_function" in mlflow.models.get_model_info(
        f"models:/seqlab-lstm/{version.version}").flavors


def test_the_generate_command_streams_from_a_champion_and_refuses_bad_settings(repro):
    repo, _, _ = repro
    cli = [sys.executable, "-m", "pipeline.generate"]
    p = run(cli + ["models:/seqlab-gru@champion", "--prompt", "The ", "--max-tokens", "30", "--seed", "1"], repo)
    assert p.stdout.startswith("The ") and len(p.stdout) > 10, p.stdout
    bad = subprocess.run(cli + ["models/gru", "--prompt", "x", "--top-p", "0"], cwd=repo, env=tool_env(),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "error: top_p: 0.0 is out of range; expected a number > 0 and <= 1"), bad.stderr


def test_a_failed_rerun_leaves_the_previous_results_recoverable(repro):
    """DVC removes a stage's outputs before running it: a rerun that fails (here at the tracking
    check) must not cost the user the trained network or its learning curve (README: `dvc checkout`)."""
    repo, _, _ = repro
    kept = ["models/rnn/model.weights.h5", "models/rnn/config.json", "plots/rnn/history.csv", "metrics/rnn.json",
            "provenance/rnn.json"]
    before = {name: (repo / name).read_bytes() for name in kept}
    failed = subprocess.run(["dvc", "repro", "-f", "-s", "train@rnn"], cwd=repo, timeout=300, capture_output=True,
                            text=True, env=tool_env() | {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert failed.returncode != 0 and "the tracking server does not answer" in failed.stderr, failed.stderr
    run(["dvc", "checkout"], repo)
    assert {name: (repo / name).read_bytes() for name in kept} == before
    assert "train@rnn" not in json.loads(run(["dvc", "status", "--json"], repo).stdout)


def test_rerunning_evaluate_on_an_unchanged_network_registers_nothing_new(repro):
    """Registration is idempotent: the same network and data are the same version."""
    import mlflow
    repo, _, _ = repro
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    before = sorted(v.version for v in client.search_model_versions("name = 'seqlab-gru'"))
    provenance = json.loads((repo / "provenance" / "gru.json").read_text())
    run(["dvc", "repro", "-f", "-s", "evaluate@gru"], repo)
    assert sorted(v.version for v in client.search_model_versions("name = 'seqlab-gru'")) == before
    assert json.loads((repo / "provenance" / "gru.json").read_text()) == provenance


def test_a_new_tracking_store_makes_the_registering_stages_run_again(repro, tmp_path):
    """`rm mlflow.db` (or another MLFLOW_TRACKING_URI) used to leave everything "up to date" with an
    empty registry: the stages that register now depend on the store's identity."""
    repo, _, _ = repro
    env = tool_env() | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    dvc = lambda *args: subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True,  # noqa: E731
                                       timeout=300)
    try:
        assert dvc("repro", "-s", "store").returncode == 0
        changed = set(json.loads(dvc("status", "--json").stdout))
        assert {"ngram", "report"} | {f"evaluate@{arch}" for arch in ARCHS} <= changed, changed
        assert not any(name.startswith(("train@", "prepare")) for name in changed), changed
    finally:
        run(["dvc", "repro", "-s", "store"], repo)          # back to the repo's own store
    assert "ngram" not in json.loads(run(["dvc", "status", "--json"], repo).stdout)


def test_changing_the_sampler_reruns_the_stages_that_sample(repro):
    repo, _, _ = repro
    sampler = repo / "pipeline" / "generation" / "sampling.py"
    original = sampler.read_text()
    sampler.write_text(original + "\n# an edit\n")
    try:
        changed = set(json.loads(run(["dvc", "status", "--json"], repo).stdout))
    finally:
        sampler.write_text(original)
    # `corpus` and `store` are always changed: they fingerprint the corpus and the tracking store at
    # every repro (and change nothing when those did not change); diagnose loads the n-gram model,
    # whose module samples
    assert changed == {"corpus", "store", "ngram", "diagnose"} | {f"evaluate@{arch}" for arch in ARCHS}, changed


def _changed_after_editing(repo, module: str) -> set:
    """The stages `dvc status` marks changed after appending a comment to ``module`` (then restored)."""
    path = repo / module
    original = path.read_text()
    path.write_text(original + "\n# an edit\n")
    try:
        return set(json.loads(run(["dvc", "status", "--json"], repo).stdout)) - {"corpus", "store"}
    finally:
        path.write_text(original)


def test_serving_code_reregisters_without_retraining_and_family_code_retrains(repro):
    """Registering is the evaluate stage's job: the serving code is a dependency of the stages that
    register (evaluate@*, ngram), never of training; a family's code is a dependency of training."""
    repo, _, _ = repro
    serving = _changed_after_editing(repo, "pipeline/generation/requests.py")
    assert serving == {"ngram"} | {f"evaluate@{arch}" for arch in ARCHS}, serving
    family = _changed_after_editing(repo, "pipeline/models/conv_net.py")
    assert {"train@conv", "evaluate@conv", "diagnose"} <= family, family
    assert not any(name.startswith(("prepare", "ngram")) for name in family), family


def test_second_repro_does_nothing(repro):
    repo, _, _ = repro
    t0 = time.perf_counter()
    second = run(["dvc", "repro"], repo)
    ran = {line for line in (second.stdout + second.stderr).splitlines() if line.startswith("Running stage")}
    assert ran == {"Running stage 'corpus':", "Running stage 'store':"}, ran   # the fingerprints found no change
    assert time.perf_counter() - t0 < 30


@pytest.mark.slow   # in CI (.ci/run) after `make test`, which it keeps under 10 minutes
def test_exp_run_temp_uses_the_original_mlflow_store(repro):
    repo, _, _ = repro
    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("seqlab")
    before = len(client.search_runs([exp.experiment_id], "attributes.run_name = 'ngram'"))
    run(["dvc", "exp", "run", "--temp", "-S", "ngram.order=2"], repo)
    after = client.search_runs([exp.experiment_id], "attributes.run_name = 'ngram'")
    assert len(after) == before + 1
    assert "DVC_EXP_NAME" in after[0].data.tags or "dvc_exp_name" in {k.lower() for k in after[0].data.tags}
    shown = run(["dvc", "exp", "show", "--json"], repo).stdout
    assert "ngram.order" in shown or '"order": 2' in shown
    run(["dvc", "metrics", "diff"], repo)
    run(["dvc", "plots", "diff", "--json"], repo)


@pytest.mark.slow   # in CI (.ci/run) after `make test`, which it keeps under 10 minutes
def test_networks_restored_from_the_run_cache_are_registered_in_a_new_store(repro):
    """DVC's run cache brings back a trained network the tracking store never saw: evaluate
    registers it again (a new store numbers versions from 1, so the number alone proves nothing).
    Only rnn's chain is rerun (`dvc repro evaluate@rnn`): the new store makes every registering
    stage stale, which test_a_new_tracking_store_makes_the_registering_stages_run_again checks."""
    repo, _, _ = repro
    import yaml
    (repo / "mlflow.db").rename(repo / "mlflow.db.first")           # a new, empty tracking store
    params_path = repo / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["models"]["rnn"]["units"] = 12
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro", "evaluate@rnn"], repo)                     # trains rnn 12 -> version 1 of the new store

    params_path.write_text(original)                                 # back to rnn 16: DVC restores it
    restored = run(["dvc", "repro", "evaluate@rnn"], repo)
    assert "Stage 'train@rnn' is cached - skipping run" in restored.stdout + restored.stderr
    seen = json.loads(run([sys.executable, "-c", _READ_RNN_REGISTRY], repo).stdout)  # see _READ_RNN_REGISTRY
    assert sorted(seen["versions"]) == ["1", "2"]
    m = json.loads((repo / "provenance" / "rnn.json").read_text())
    assert m["version"] == "2" and seen["versions"]["2"]["run_id"] == m["run_id"]
    first_run = json.loads((repo / "models" / "rnn" / "run.json").read_text())["run_id"]
    assert seen["runs"][m["run_id"]]["tags"]["registered_from_dvc_cache"] == first_run
    assert "test_bpc" in seen["versions"]["2"]["tags"] and "bpc/test" in seen["runs"][m["run_id"]]["metrics"]


# Read in a new process: this one's MLflow still holds a connection to the renamed database file.
_READ_RNN_REGISTRY = """
import json
from mlflow import MlflowClient
c = MlflowClient(tracking_uri="sqlite:///mlflow.db")
versions = {str(v.version): {"run_id": v.run_id, "tags": v.tags} for v in c.search_model_versions("name='seqlab-rnn'")}
runs = {v["run_id"]: c.get_run(v["run_id"]).data for v in versions.values()}
print(json.dumps({"versions": versions, "runs": {k: {"tags": d.tags, "metrics": d.metrics} for k, d in runs.items()}}))
"""
