"""The whole pipeline end to end on a few thousand real digits with a small step budget:
trains, evaluates, pushes; a rerun on unchanged data re-runs nothing and pushes nothing; a new
span retrains and goes through the gate against the serving model; rollback."""

import json
import os

import pytest
import tensorflow as tf
from mnist_slices import write_mnist_slice

from pipeline.cli import main

# Thresholds sized for a 2,000-digit, few-hundred-step model; the real defaults stay strict.
TEST_CONFIG = """
[trainer]
train_steps = 300
batch_size = 50
eval_every_steps = 150
early_stopping_evals = 0

[evaluator]
accuracy_floor = 0.60
promotion_policy = "non_inferiority"
non_inferiority_margin = 0.05
slice_accuracy_floor = 0.20
slice_max_regression = 0.30
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    data = base / "data"
    write_mnist_slice(str(data / "span-1"), 2000, 400)
    config = base / "config.toml"
    config.write_text(TEST_CONFIG)
    return base


def run(workspace, name, *extra):
    summary_path = str(workspace / f"{name}.json")
    code = main(
        [
            "--config",
            str(workspace / "config.toml"),
            "--data-root",
            str(workspace / "data"),
            "--pipeline-root",
            str(workspace / "root"),
            "--summary-json",
            summary_path,
            *extra,
        ]
    )
    with open(summary_path) as f:
        return code, json.load(f)


def test_first_run_trains_evaluates_and_pushes_version_1(workspace):
    code, summary = run(workspace, "first")
    assert code == 0, summary["message"]
    assert {s["state"] for s in summary["steps"].values()} == {"ran"}
    evaluation = summary["evaluation"]
    assert evaluation["blessed"] == 1, evaluation["reasons"]
    overall = evaluation["metrics"]["candidate"]["overall"]
    assert overall["accuracy"] > 0.6
    assert {f"label={d}" for d in range(10)} <= set(evaluation["metrics"]["candidate"])
    assert summary["push"] == {**summary["push"], "pushed": 1, "version": 1}
    serving = workspace / "root" / "serving" / "1"
    loaded = tf.saved_model.load(str(serving))
    assert {"serving_default", "serving_images"} <= set(loaded.signatures)


def test_rerun_on_unchanged_data_reruns_nothing_and_pushes_nothing(workspace):
    code, summary = run(workspace, "noop")
    assert code == 0, summary["message"]
    states = {name: s["state"] for name, s in summary["steps"].items()}
    assert states == {**{n: "cached" for n in states if n != "pusher"}, "pusher": "ran"}
    assert summary["push"]["pushed"] == 0
    assert "already serving" in summary["push"]["reason"]
    assert sorted(n for n in os.listdir(workspace / "root" / "serving") if not n.startswith(".")) == ["1"]


def test_new_span_retrains_and_is_compared_with_the_serving_model(workspace):
    write_mnist_slice(str(workspace / "data" / "span-2"), 2000, 400, offset=2000)
    code, summary = run(workspace, "span2")
    assert code == 0, summary["message"]
    assert summary["data"]["spans"] == [2]
    assert summary["steps"]["trainer"]["state"] == "ran"
    metrics = summary["evaluation"]["metrics"]
    assert metrics["baseline"] and "overall" in metrics["baseline"]
    # The test config tolerates a 5-point drop, so two models of this size both pass.
    assert summary["evaluation"]["blessed"] == 1, summary["evaluation"]["reasons"]
    assert summary["push"]["pushed"] == 1 and summary["push"]["version"] == 2


def test_rollback_and_status(workspace, capsys):
    versions = sorted(int(v) for v in os.listdir(workspace / "root" / "serving") if v.isdigit())
    assert versions == [1, 2]
    assert main(["rollback", "--pipeline-root", str(workspace / "root")]) == 0
    newest = sorted(int(v) for v in os.listdir(workspace / "root" / "serving") if v.isdigit())[-1]
    assert newest == versions[-1] + 1
    capsys.readouterr()
    assert main(["status", "--pipeline-root", str(workspace / "root")]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["serving"]["version"] == newest
    assert status["serving"]["rolled_back_from"] == versions[-2]
    assert status["serving"]["spans"] == [1]
