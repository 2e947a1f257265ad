"""The training loop under tf.distribute, on CPU only: every run is a fresh subprocess.

- MirroredStrategy over two logical CPU devices (configured before TensorFlow initialises its
  devices, hence a subprocess) follows the single-device run: per-epoch losses within
  ``LOSS_TOL`` and final weights within ``WEIGHT_TOL`` (measured: both about 1e-7), with gradient
  clipping active (``clipnorm`` 0.05, the gradient norm is about 0.3) and XLA on.
- Gradients are summed across replicas once, and the global norm of the *sum* is clipped
  (stock Keras 3 clips each replica's part before its own all-reduce).
- MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1: both exit 0, only the chief
  writes the checkpoint, the losses are finite and follow the single-device run (measured: about
  1e-7); a second two-worker run (XLA off) resumes both workers from the chief's checkpoint (the
  other worker has none) and ends where the uninterrupted single-device run ends (measured: 2.4e-7).

With the rnn's default ``train.state`` (carried) each replica keeps its own tracks' state; the
mirrored run is repeated with random windows (``train.state: windows``). About 70 s on two
otherwise idle CPU cores; more when other jobs share them, so the module is marked slow (CI runs it).
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow   # in CI (.ci/run) after `make test`, which it keeps under 10 minutes

LOSS_TOL = 1e-5     # absolute, on per-epoch mean losses around 3.8 nats
WEIGHT_TOL = 1e-4   # absolute, on every final weight
TIMEOUT = 240       # seconds for any one process (they take 10-25 s)

DRIVER = textwrap.dedent('''
    import json, os, sys
    args = json.loads(sys.argv[1])
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if args.get("tf_config"):
        os.environ["TF_CONFIG"] = json.dumps(args["tf_config"])
    import tensorflow as tf
    if args.get("logical_cpus"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args["logical_cpus"])
    import numpy as np
    from pipeline.models import build_model
    from pipeline.config.params import TrainParams
    from pipeline.models.recurrent import RecurrentParams
    from pipeline.training.loop import train_model
    from pipeline.training.optimizer import apply_aggregated, make_optimizer

    out = {}
    if args.get("check_aggregation"):
        # replica r contributes the gradient (r + 1) * ones(4): the sum is 3 * ones(4), norm 6, clipped to
        # norm 1 -> 0.5 each, so Adam's first moment is (1 - beta1) * 0.5 = 0.05 on every replica.
        import keras
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            var = keras.Variable(np.zeros(4, np.float32), name="kernel")
            opt = make_optimizer(TrainParams(learning_rate=0.1, warmup_steps=0, clipnorm=1.0, beta1=0.9), 10)
            opt.build([var])

        @tf.function
        def step():
            def replica_fn():
                r = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.float32)
                apply_aggregated(opt, [tf.fill([4], r + 1.0)], [var])
            strategy.run(replica_fn)

        step()
        momentum = [v for v in opt.variables if "momentum" in v.path][0]
        local = strategy.experimental_local_results
        out["aggregation"] = {"momentum": [np.asarray(t).tolist() for t in local(momentum.value)],
                              "weights": [np.asarray(t).tolist() for t in local(var.value)],
                              "iterations": int(opt.iterations.numpy())}

    ids = np.random.default_rng(0).integers(2, 40, 30000).astype(np.int32)
    model = RecurrentParams(family="rnn", embed_dim=8, units=16, layers=1)


    class Stop(Exception):
        pass


    for run in args["runs"]:
        train = TrainParams(seq_len=24, batch_size=8, epochs=2, steps_per_epoch=6, steps_per_execution=3,
                            warmup_steps=2, learning_rate=3e-3, clipnorm=0.05, eval_tokens=480,
                            distribute=run["distribute"], jit_compile=run.get("jit", "true"), precision="float32",
                            state=run.get("state", "auto"))

        def on_epoch(row):  # called before the epoch's checkpoint is written: stopping keeps the previous one
            if row["epoch"] == run.get("stop_at_epoch"):
                raise Stop()

        try:
            r = train_model(model, train, ids, ids[:3000], 40, "data-hash", 11, run["ckpt"], build_model,
                            on_epoch=on_epoch)
            out[run["name"]] = dict(
                history=r.history, settings=r.settings, is_chief=r.is_chief, steps_run=r.steps_run,
                resumed_from_epoch=r.resumed_from_epoch,
                weights=[float(x) for w in r.model.get_weights() for x in np.ravel(w)])
        except Stop:
            out[run["name"]] = {"stopped": True}
    with open(args["out"], "w") as f:
        json.dump(out, f)
''')


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "CUDA_VISIBLE_DEVICES")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    return env


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tf_config(ports: list[int], index: int) -> dict:
    return {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}


class Procs:
    """Driver subprocesses of this module; whatever still runs at teardown is killed (by its own id)."""

    def __init__(self, tmp):
        self.tmp, self.running = tmp, {}
        (tmp / "driver.py").write_text(DRIVER)

    def start(self, name: str, runs: list[dict], **args) -> None:
        for run in runs:
            run.setdefault("ckpt", str(self.tmp / f"ckpt-{run['name']}"))
        args.update(runs=runs, out=str(self.tmp / f"{name}.json"))
        log = open(self.tmp / f"{name}.log", "w")
        p = subprocess.Popen([sys.executable, str(self.tmp / "driver.py"), json.dumps(args)], cwd=ROOT,
                             env=_env(), stdout=log, stderr=subprocess.STDOUT)
        self.running[name] = (p, log)

    def result(self, name: str) -> dict:
        p, log = self.running[name]
        try:
            rc = p.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill_all()
            pytest.fail(f"{name}: no result within {TIMEOUT} s:\n{self.log(name)}")
        log.close()
        assert rc == 0, f"{name} exited with {rc}:\n{self.log(name)}"
        return json.loads((self.tmp / f"{name}.json").read_text())

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-6000:]

    def kill_all(self) -> None:
        for p, log in self.running.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
            log.close()


@pytest.fixture(scope="module")
def procs(tmp_path_factory):
    """Starts the runs that depend on nothing at once; the tests wait for the ones they need."""
    procs = Procs(tmp_path_factory.mktemp("distribute"))
    # one process: the replica-sum check on two logical CPUs, then two single-device runs (the default
    # strategy uses one device): the reference, and one stopped after epoch 1's checkpoint
    procs.start("single", [{"name": "reference", "distribute": "none"},
                           {"name": "stopped", "distribute": "none", "stop_at_epoch": 2},
                           {"name": "reference-windows", "distribute": "none", "state": "windows"}],
                logical_cpus=2, check_aggregation=True)
    # one MirroredStrategy per process: a second one in the same process clashes with the first's collectives
    procs.start("mirrored", [{"name": "mirrored", "distribute": "mirrored"}], logical_cpus=2)
    procs.start("mirrored-windows", [{"name": "mirrored-windows", "distribute": "mirrored", "state": "windows"}],
                logical_cpus=2)
    ports = _free_ports(2)
    for i in range(2):
        procs.start(f"fresh{i}", [{"name": "run", "distribute": "multi_worker"}], tf_config=_tf_config(ports, i))
    yield procs
    procs.kill_all()


@pytest.fixture(scope="module")
def single(procs):
    return procs.result("single")


def _losses(result) -> np.ndarray:
    return np.array([[h["train_loss"], h["valid_loss"]] for h in result["history"]])


def _gaps(a: dict, b: dict) -> tuple[float, float]:
    return (float(np.abs(_losses(a) - _losses(b)).max()),
            float(np.abs(np.array(a["weights"]) - np.array(b["weights"])).max()))


def test_gradients_are_summed_once_then_clipped(single):
    agg = single["aggregation"]
    assert agg["iterations"] == 1
    for m in agg["momentum"]:  # per-replica clipping would give 0.1, a second sum 0.1 or more
        np.testing.assert_allclose(m, [0.05] * 4, rtol=1e-6)
    for w in agg["weights"]:  # every replica applied the same update; Adam's first step is -lr * sign
        np.testing.assert_allclose(w, [-0.1] * 4, rtol=1e-4)


@pytest.mark.parametrize("state", ["carried", "windows"])
def test_mirrored_two_cpus_follows_single_device(procs, single, state):
    """Each replica trains on its rows of the single device's batches: with the state carried, its
    own tracks, whose state it keeps from step to step."""
    suffix = "" if state == "carried" else "-windows"
    mirrored = procs.result("mirrored" + suffix)["mirrored" + suffix]
    reference = single["reference" + suffix]
    assert reference["settings"]["replicas"] == 1
    assert mirrored["settings"] == {"precision": "float32", "jit_compile": True, "strategy": "MirroredStrategy",
                                    "replicas": 2, "state": state, "keep": "last", "kept_epoch": 2}
    loss_gap, weight_gap = _gaps(mirrored, reference)
    print(f"mirrored (2 CPUs) vs single device, {state}: loss gap {loss_gap:.1e}, weight gap {weight_gap:.1e}")
    assert loss_gap <= LOSS_TOL and weight_gap <= WEIGHT_TOL


def test_two_workers_on_loopback(procs, single):
    reference = single["reference"]
    chief, other = procs.result("fresh0")["run"], procs.result("fresh1")["run"]
    assert chief["is_chief"] and not other["is_chief"]
    assert chief["settings"]["replicas"] == 2 and chief["steps_run"] == other["steps_run"] == 12
    assert np.isfinite(_losses(chief)).all()
    # only the chief writes: worker 1 has no checkpoint folder at all
    assert (procs.tmp / "ckpt-run" / "last.npz").exists()
    loss_gap, weight_gap = _gaps(chief, reference)
    print(f"two workers vs single device: loss gap {loss_gap:.1e}, weight gap {weight_gap:.1e}")
    assert loss_gap <= LOSS_TOL and weight_gap <= WEIGHT_TOL
    assert _gaps(chief, other)[1] == 0  # the workers hold the same weights


def test_two_workers_resume_from_the_chief_checkpoint(procs, single):
    """Worker 0 holds the single-device run's checkpoint after epoch 1, worker 1 none; XLA off this time
    (distribute and jit_compile do not invalidate a checkpoint)."""
    assert single["stopped"] == {"stopped": True}
    ports = _free_ports(2)
    ckpts = [procs.tmp / "ckpt-stopped", procs.tmp / "ckpt-other"]
    for i in range(2):
        procs.start(f"resumed{i}", [{"name": "run", "distribute": "multi_worker", "jit": "false",
                                     "ckpt": str(ckpts[i])}], tf_config=_tf_config(ports, i))
    chief, other = procs.result("resumed0")["run"], procs.result("resumed1")["run"]
    assert chief["resumed_from_epoch"] == other["resumed_from_epoch"] == 1
    assert chief["steps_run"] == other["steps_run"] == 6
    assert "resuming from the checkpoint after epoch 1 (the chief's checkpoint) at step 6" in procs.log("resumed1")
    assert not ckpts[1].exists()
    loss_gap, weight_gap = _gaps(chief, single["reference"])
    print(f"two workers resumed vs uninterrupted single device: loss gap {loss_gap:.1e}, "
          f"weight gap {weight_gap:.1e}")
    assert loss_gap <= LOSS_TOL and weight_gap <= WEIGHT_TOL
    assert _gaps(chief, other)[1] == 0
