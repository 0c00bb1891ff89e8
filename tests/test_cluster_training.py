"""Training on a local TensorFlow cluster (trainer.workers > 0): real chief, worker and
parameter-server processes on loopback ports; a task that dies, a killed pipeline process,
leftovers of a killed run, and the settings."""

import dataclasses
import glob
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from mnist_slices import write_mnist_slice
from step_context import step_context
from tiny_examples import real_split, write_examples_artifact

from components.trainer import cluster, executor, inputs
from components.trainer.exporters import choose
from components.trainer.params import TrainerParams
from components.trainer.weight_averaging import SHADOW_SUFFIX
from pipeline.config import DEFAULT_SCHEMA_PATH, TrainerConfig, load_config
from pipeline.core.errors import ConfigError, TrainingError
from pipeline.core.step import Artifact
from pipeline.formats import examples as examples_format
from pipeline.formats.model import SERVING_SUBDIR
from pipeline.predict import classify

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A small network keeps each task to seconds on two shared cores.
SMALL = dict(
    conv1_filters=8,
    conv2_filters=16,
    dense_units=64,
    batch_size=50,
    random_seed=7,
    augment_max_shift=0.0,
    augment_max_rotation=0.0,
    early_stopping_evals=0,
)
PID_LINE = re.compile(r"cluster task (\S+) \(pid (\d+)\) starting")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(examples, schema) artifacts: 600 real training digits, the next 200 as eval."""
    base = tmp_path_factory.mktemp("cluster_data")
    examples = write_examples_artifact(
        str(base / "examples"), {"train": real_split(600), "eval": real_split(200, 600)}
    )
    os.makedirs(base / "schema")
    shutil.copy(DEFAULT_SCHEMA_PATH, base / "schema" / "schema.pbtxt")
    return (
        Artifact(examples, "Examples", {"split_counts": {"train": 600, "eval": 200}}, id=1),
        Artifact(str(base / "schema"), "Schema", id=2),
    )


def trainer_ctx(root, data, **overrides):
    examples, schema = data
    cfg = dataclasses.replace(TrainerConfig(), **{**SMALL, "workers": 1, "parameter_servers": 1, **overrides})
    outputs = {key: os.path.join(str(root), "trainer", key, ".staging-1") for key in ("model", "model_run")}
    ctx = step_context("trainer", {"examples": examples, "schema": schema}, outputs, params=cfg)
    ctx.pipeline_root = str(root)
    return ctx


def task_pids(cluster_dir) -> dict:
    """task name -> PID, from the line each task logs when it starts."""
    pids = {}
    for path in glob.glob(os.path.join(cluster_dir, "*.log")):
        match = PID_LINE.search(open(path, errors="replace").read())
        if match:
            pids[match.group(1)] = int(match.group(2))
    return pids


def alive(pid) -> bool:
    """True while `pid` is a process that has not exited (zombies count as gone)."""
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(predicate, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


# ---- units -------------------------------------------------------------------------------


def test_free_port_is_a_bindable_loopback_port():
    import socket

    port = cluster.free_port()
    assert 1024 <= port <= 65535
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))  # raises when it was not free


def test_cluster_spec_puts_every_task_on_its_own_loopback_port():
    spec = cluster.cluster_spec(cluster.layout(2, 1))
    assert sorted(spec) == ["chief", "ps", "worker"]
    assert [len(spec[j]) for j in ("chief", "worker", "ps")] == [1, 2, 1]
    addresses = [a for job in spec.values() for a in job]
    assert all(a.startswith("127.0.0.1:") for a in addresses)
    assert len(set(addresses)) == len(addresses)
    config = json.loads(cluster.tf_config(spec, "worker", 1))
    assert config == {"cluster": spec, "task": {"type": "worker", "index": 1}}
    assert "ps" not in cluster.cluster_spec(cluster.layout(0, 0))


@pytest.mark.parametrize(
    "trainer, key, fragment",
    [
        ({"workers": 2}, "trainer.parameter_servers", "must be >= 1 when trainer.workers > 0"),
        ({"workers": -1}, "trainer.workers", "must be >= 0"),
        ({"workers": 1, "parameter_servers": -1}, "trainer.parameter_servers", "must be >= 0"),
        ({"parameter_servers": 1}, "trainer.parameter_servers", "must be 0 when trainer.workers = 0"),
        ({"workers": "two"}, "trainer.workers", "expected int"),
    ],
)
def test_cluster_settings_are_refused_naming_the_key(trainer, key, fragment):
    with pytest.raises(ConfigError) as caught:
        load_config(overrides={"trainer": trainer})
    message = str(caught.value)
    assert message.startswith(f"config key {key}:") and fragment in message
    assert "\n" not in message


def test_cluster_settings_default_to_one_process_and_accept_a_cluster():
    assert (TrainerConfig().workers, TrainerConfig().parameter_servers) == (0, 0)
    config = load_config(overrides={"trainer": {"workers": 3, "parameter_servers": 2}})
    assert (config.trainer.workers, config.trainer.parameter_servers) == (3, 2)


def test_a_task_rebuilds_the_trainer_config_from_its_json_form():
    cfg = dataclasses.replace(TrainerConfig(), workers=2, parameter_servers=1, train_steps=7)
    # The task reads the spec file's params as cluster.train_on_cluster writes them.
    rebuilt = TrainerParams.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert type(rebuilt) is TrainerParams  # the trainer's own class, no stand-in
    assert dataclasses.asdict(rebuilt) == dataclasses.asdict(cfg)
    assert rebuilt.train_steps == 7 and dataclasses.replace(rebuilt, train_steps=8).train_steps == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        rebuilt.train_steps = 9
    # Rebuilding checks every setting again: a spec edited by hand fails naming the key.
    with pytest.raises(ConfigError, match=r"^config key trainer.optimizer: must be one of adam, sgd"):
        TrainerParams.from_dict({**cfg.to_dict(), "optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer.stale_setting'"):
        TrainerParams.from_dict({**cfg.to_dict(), "stale_setting": 1})


def test_leftovers_of_a_killed_run_are_ended_and_a_reused_pid_is_spared(tmp_path):
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )
    try:
        registry = tmp_path / "trainer" / ".cluster-tasks.json"
        registry.parent.mkdir()
        me = os.getpid()
        registry.write_text(
            json.dumps(
                {
                    "launcher_pid": 1,
                    "tasks": [
                        {
                            "name": "ps:0",
                            "pid": leftover.pid,
                            "start_time": cluster.process_start_time(leftover.pid),
                        },
                        # This PID is alive but started at another time: a reused PID, not the task.
                        {"name": "worker:0", "pid": me, "start_time": cluster.process_start_time(me) + 1},
                        {"name": "worker:1", "pid": 2**22 + 1, "start_time": 5},  # long gone
                    ],
                }
            )
        )
        ended = cluster.clean_leftovers(str(registry), logging.getLogger("test.cluster"))
        assert ended == ["ps:0"]
        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert not registry.exists()
        assert cluster.clean_leftovers(str(registry), logging.getLogger("test.cluster")) == []
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_process_start_time_is_none_for_a_missing_process():
    assert cluster.process_start_time(os.getpid()) > 0
    assert cluster.process_start_time(2**22 + 1) is None


def test_last_line_names_what_the_task_said_last(tmp_path):
    log = tmp_path / "worker-0.log"
    log.write_text("noise\n" + cluster.LOG_PREFIX + "ERROR TrainingError: NaN loss\n\n")
    assert cluster.last_line(str(log)) == "ERROR TrainingError: NaN loss"
    assert cluster.last_line(str(tmp_path / "missing.log")) == "(no output)"


# ---- real clusters -------------------------------------------------------------------------


def test_chief_worker_and_ps_train_and_export_with_both_signatures(tmp_path, data):
    import tensorflow as tf

    # Long enough for the worker to join on loaded cores: it starts 5 s after the chief and
    # also has to import TensorFlow.
    ctx = trainer_ctx(tmp_path, data, train_steps=1500, eval_every_steps=500)
    outcome = executor.run(ctx)

    props = outcome.execution_properties
    assert props["cluster"] == {"chief": 1, "worker": 1, "ps": 1}
    assert props["steps_trained"] >= 1500 and props["stopped_early"] is False
    assert props["evaluations_run"] >= 3
    assert props["best_eval_accuracy"] > 0.7  # measured about 0.93; chance is 0.1
    assert props["train_examples_per_sec"] > 0
    serving = os.path.join(ctx.outputs["model"], SERVING_SUBDIR)
    assert set(tf.saved_model.load(serving).signatures) == {"serving_default", "serving_images"}
    assert outcome.output_properties["model"]["digest"]
    run_dir = ctx.outputs["model_run"]
    history = json.load(open(os.path.join(run_dir, "training_history.json")))
    assert history["cluster"] == props["cluster"]
    assert history["best_eval_step"] == props["best_eval_step"]
    # The chief's exporter applied the configured choice of checkpoint.
    chosen = choose(history["evaluations"], ctx.params.best_checkpoint_tolerance)
    assert props["best_eval_step"] == chosen["step"]
    cluster_dir = os.path.join(run_dir, "cluster")
    # The worker really trained: it shared the variables through the parameter server.
    worker = json.load(open(os.path.join(cluster_dir, "result-worker-0.json")))
    assert worker["timed_steps"] > 0
    assert "export" not in os.listdir(run_dir)
    pids = task_pids(cluster_dir)
    assert sorted(pids) == ["chief:0", "ps:0", "worker:0"]
    assert not any(alive(pid) for pid in pids.values())
    assert not os.path.exists(cluster.registry_path(str(tmp_path), "trainer"))


def test_a_cluster_trains_in_bfloat16(tmp_path, data):
    # A cluster task's session keeps the remapper's fused Conv2D, which has no bfloat16
    # kernel, unless the trainer turns the remapper off there (executor._run_config).
    ctx = trainer_ctx(tmp_path, data, train_steps=200, eval_every_steps=100, precision="mixed_bfloat16")
    props = executor.run(ctx).execution_properties
    assert props["precision"] == "mixed_bfloat16"
    assert props["steps_trained"] >= 200
    assert props["best_eval_accuracy"] > 0.3  # chance is 0.1


def test_a_cluster_warm_starts_from_an_averaged_base_as_one_process_does(tmp_path, data):
    """Every task loads the weights the base served (its averages, under the shadow names) and
    starts its own shadows there: with the weights frozen, the cluster scores what the base did."""
    averaging = dict(weight_averaging_decay=0.9)
    base_ctx = trainer_ctx(
        tmp_path / "base",
        data,
        train_steps=60,
        eval_every_steps=30,
        workers=0,
        parameter_servers=0,
        **averaging,
    )
    base_props = (base_outcome := executor.run(base_ctx)).execution_properties
    base = Artifact(base_ctx.outputs["model"], "Model", dict(base_outcome.output_properties["model"]), id=5)
    frozen = dict(optimizer="sgd", learning_rate=1e-12)
    ctx = trainer_ctx(
        tmp_path / "warm",
        data,
        warm_start_steps=5,
        eval_every_steps=5,
        warm_start=True,
        **averaging,
        **frozen,
    )
    ctx.inputs["base_model"] = base
    props = executor.run(ctx).execution_properties
    assert props["cluster"] == {"chief": 1, "worker": 1, "ps": 1} and props["warm_started"] is True
    assert props["precision"] == base_props["precision"]
    # The served weights (the shadows) are the base's: frozen weights move by ~1e-12 a step.
    served = [
        os.path.join(c.outputs["model"], SERVING_SUBDIR, "variables", "variables") for c in (base_ctx, ctx)
    ]
    shadows = [n for n, _ in tf.train.list_variables(served[0]) if n.endswith(SHADOW_SUFFIX)]
    assert shadows
    for name in shadows:
        base_value, warm_value = (tf.train.load_variable(path, name) for path in served)
        np.testing.assert_allclose(warm_value, base_value, rtol=1e-6, atol=1e-9, err_msg=name)
    # So both models classify the eval digits alike, run here by the same kernels. The chief's
    # own evaluation is not compared with the base's to the digit: a cluster task's session runs
    # TensorFlow's plain fused Conv2D, a single process oneDNN's (executor._run_config), and their
    # rounding differs (one digit of 200 flipped once, on a loaded machine).
    records, images = inputs.read_sample(examples_format.split_files(data[0].uri, "eval"), 200)
    assert len(records) == 200
    base_ids, warm_ids = (classify(os.path.dirname(os.path.dirname(path)), images)[0] for path in served)
    assert np.array_equal(warm_ids, base_ids)


def test_a_worker_that_dies_fails_the_step_naming_it_and_exports_nothing(tmp_path, data):
    # A budget it never reaches; progress lines every 100 steps show the worker training.
    ctx = trainer_ctx(tmp_path, data, train_steps=100000, eval_every_steps=500)
    cluster_dir = os.path.join(ctx.outputs["model_run"], "cluster")
    killed = {}

    def kill_the_worker_once_it_trains():
        def training_worker():
            log = os.path.join(cluster_dir, "worker-0.log")
            return os.path.exists(log) and " train step " in open(log, errors="replace").read()

        killed["while_training"] = wait_until(training_worker, timeout=240)
        # Killed in any case, so that the step always ends.
        pid = wait_until(lambda: task_pids(cluster_dir).get("worker:0"), timeout=60)
        for victim in [pid] if pid else task_pids(cluster_dir).values():  # never a run that hangs
            os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_the_worker_once_it_trains, daemon=True)
    killer.start()
    with pytest.raises(TrainingError) as caught:
        executor.run(ctx)
    killer.join()
    message = str(caught.value)
    assert killed["while_training"], "the worker never started training"
    assert message.startswith("cluster task worker:0 was killed by SIGKILL: "), message
    assert "\n" not in message
    assert os.listdir(ctx.outputs["model"]) == []
    pids = task_pids(cluster_dir)
    assert sorted(pids) == ["chief:0", "ps:0", "worker:0"]
    assert not any(alive(pid) for pid in pids.values())


CLUSTER_CONFIG = """
[trainer]
train_steps = {steps}
batch_size = 50
eval_every_steps = {every}
early_stopping_evals = 0
conv1_filters = 8
conv2_filters = 16
dense_units = 64
augment_max_shift = 0.0
augment_max_rotation = 0.0
workers = 1
parameter_servers = 1
"""


def run_local(data_root, config, root, *extra):
    env = dict(os.environ, PYTHONPATH=PROJECT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(
        [
            sys.executable,
            os.path.join(PROJECT, "run_local.py"),
            "--config",
            str(config),
            "--data-root",
            data_root,
            "--pipeline-root",
            str(root),
            "--summary-json",
            str(root) + ".summary.json",
            "--to",
            "trainer",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigkill_of_the_pipeline_ends_every_task_and_the_next_run_completes(tmp_path):
    data_root = write_mnist_slice(str(tmp_path / "data"), 1000, 200)
    long_config = tmp_path / "long.toml"
    long_config.write_text(CLUSTER_CONFIG.format(steps=100000, every=500))
    root = tmp_path / "root"
    registry = cluster.registry_path(str(root), "trainer")

    victim = run_local(data_root, long_config, root)
    try:

        def training_chief():
            logs = glob.glob(
                os.path.join(str(root), "trainer", "model_run", ".staging-*", "cluster", "chief-0.log")
            )
            return (
                os.path.exists(registry)
                and logs
                and " cluster step " in open(logs[0], errors="replace").read()
            )

        assert wait_until(training_chief, timeout=300, interval=0.2), "cluster training never started"
        tasks = json.load(open(registry))["tasks"]
        assert sorted(t["name"] for t in tasks) == ["chief:0", "ps:0", "worker:0"]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        victim.stdout.close()
    # The kernel's parent-death signal ends them at once; nothing survives the launcher.
    assert wait_until(lambda: not any(alive(t["pid"]) for t in tasks), timeout=10), [
        t["name"] for t in tasks if alive(t["pid"])
    ]

    short_config = tmp_path / "short.toml"
    short_config.write_text(CLUSTER_CONFIG.format(steps=200, every=100))
    resumed = run_local(data_root, short_config, root)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    summary = json.load(open(str(root) + ".summary.json"))
    assert summary["steps"]["example_gen"]["state"] == "cached"
    trainer = summary["steps"]["trainer"]
    assert trainer["state"] == "ran"
    assert trainer["properties"]["cluster"] == {"chief": 1, "worker": 1, "ps": 1}
    from pipeline.core.metadata import open_store

    store = open_store(str(root))
    newest = store.executions_of("trainer")[0]
    assert store.execution_outcome(newest)["properties"]["cluster"] == {"chief": 1, "worker": 1, "ps": 1}
    assert not os.path.exists(registry)
    assert glob.glob(os.path.join(str(root), "**", ".staging-*"), recursive=True) == []


def test_an_error_a_task_understood_keeps_its_class_and_message(tmp_path, data):
    ctx = trainer_ctx(
        tmp_path, data, train_steps=200, eval_every_steps=100, optimizer="sgd", learning_rate=1e12
    )
    with pytest.raises(TrainingError) as caught:
        executor.run(ctx)
    message = str(caught.value)
    assert re.match(
        r"cluster task (chief|worker):0 exited with code 1: (NaN|Inf) loss at step \d+ "
        r"of training",
        message,
    ), message
    assert "\n" not in message
    assert os.listdir(ctx.outputs["model"]) == []
    assert not any(
        alive(pid) for pid in task_pids(os.path.join(ctx.outputs["model_run"], "cluster")).values()
    )
