"""The whole pipeline end to end on a few thousand real digits, the statistical promotion gate
included. One pipeline root, in order: a weak first model trains, is evaluated and pushed
(floors only); a rerun on unchanged data re-runs nothing and pushes nothing; a new span
retrains, and the clearly stronger candidate is compared with the serving model and pushed over
it; an equally good retrain is refused under superiority and accepted under non-inferiority;
rollback and status. Every decision carries its paired statistics in decision.json, the summary
and ML Metadata, and the report shows them."""

import json
import os

import pytest
import tensorflow as tf
from mnist_slices import write_mnist_slice

from pipeline.cli import main

CONFIG = """
[trainer]
batch_size = 50
# One evaluation and export, at the end: a retrain of the same settings then exports the same
# step, so "equal" does not depend on which checkpoint happened to evaluate best.
eval_every_steps = 600
early_stopping_evals = 0
random_seed = 42
keep_checkpoints = {keep}

[evaluator]
accuracy_floor = 0.50
slice_accuracy_floor = 0.10
slice_max_regression = 0.20
promotion_policy = "{policy}"
non_inferiority_margin = 0.03
"""


@pytest.fixture(scope="module")
def gate_ws(tmp_path_factory):
    base = tmp_path_factory.mktemp("gate")
    write_mnist_slice(str(base / "data" / "span-1"), 1500, 1000)
    return base


def run(ws, name, *, keep=3, policy="superiority", steps):
    config = ws / f"{name}.toml"
    config.write_text(CONFIG.format(keep=keep, policy=policy))
    summary_path = ws / f"{name}.json"
    code = main(
        [
            "--config",
            str(config),
            "--data-root",
            str(ws / "data"),
            "--pipeline-root",
            str(ws / "root"),
            "--summary-json",
            str(summary_path),
            "--train-steps",
            str(steps),
        ]
    )
    summary = json.loads(summary_path.read_text())
    assert code == 0, summary["message"]
    return summary


def decision_of(summary) -> dict:
    with open(os.path.join(summary["steps"]["evaluator"]["outputs"]["blessing"], "decision.json")) as f:
        return json.load(f)


def serving_versions(ws) -> list:
    return sorted(int(v) for v in os.listdir(ws / "root" / "serving") if v.isdigit())


def test_first_run_trains_evaluates_and_pushes_version_1(gate_ws):
    first = run(gate_ws, "weak", steps=40)
    assert {s["state"] for s in first["steps"].values()} == {"ran"}
    evaluation = first["evaluation"]
    assert evaluation["blessed"] == 1, evaluation["reasons"]
    assert {f"label={d}" for d in range(10)} <= set(evaluation["metrics"]["candidate"])
    assert first["push"] == {**first["push"], "pushed": 1, "version": 1}
    # No serving model yet: floors only, nothing to compare with.
    assert evaluation["policy"] is None and evaluation["comparisons"] == []
    loaded = tf.saved_model.load(str(gate_ws / "root" / "serving" / "1"))
    assert {"serving_default", "serving_images"} <= set(loaded.signatures)


def test_rerun_on_unchanged_data_reruns_nothing_and_pushes_nothing(gate_ws):
    summary = run(gate_ws, "noop", steps=40)
    states = {name: s["state"] for name, s in summary["steps"].items()}
    assert states == {**{n: "cached" for n in states if n != "pusher"}, "pusher": "ran"}
    assert summary["push"]["pushed"] == 0
    assert "already serving" in summary["push"]["reason"]
    assert sorted(n for n in os.listdir(gate_ws / "root" / "serving") if not n.startswith(".")) == ["1"]


def test_new_span_retrains_and_a_stronger_model_is_pushed_over_the_serving_one(gate_ws):
    weak = json.loads((gate_ws / "weak.json").read_text())["evaluation"]["metrics"]["candidate"]
    # A new span of the same size, disjoint digits; fifteen times the training.
    write_mnist_slice(str(gate_ws / "data" / "span-2"), 1500, 1000, offset=1500)
    strong = run(gate_ws, "strong", steps=600)
    assert strong["data"]["spans"] == [2]
    assert strong["steps"]["trainer"]["state"] == "ran"
    evaluation = strong["evaluation"]
    assert evaluation["blessed"] == 1, evaluation["reasons"]
    assert strong["push"]["pushed"] == 1 and strong["push"]["version"] == 2
    metrics = evaluation["metrics"]
    assert metrics["baseline"] and "overall" in metrics["baseline"]
    assert metrics["candidate"]["overall"]["accuracy"] > 0.6
    overall = evaluation["comparisons"][0]
    assert overall["slice"] == "overall" and overall["n"] == 1000
    assert overall["candidate_only"] > overall["baseline_only"]
    assert overall["difference_ci"][0] > 0 and overall["p_value"] < 0.001
    assert metrics["candidate"]["overall"]["accuracy"] > weak["overall"]["accuracy"]
    recorded = decision_of(strong)
    assert recorded["comparisons"] == evaluation["comparisons"]
    assert (recorded["policy"], recorded["alpha"]) == ("superiority", 0.05)
    labels = [c for c in recorded["comparisons"] if c["slice"].startswith("label=")]
    # Holm over the ten label slices: the k-th smallest p gets alpha / (10 - k + 1).
    assert sorted(c["alpha"] for c in labels) == pytest.approx(
        sorted(0.05 / k for k in range(1, 11)), abs=1e-6
    )
    html = open(strong["report"], encoding="utf-8").read()
    assert "Candidate vs the serving model" in html and "Passed the gate: overall accuracy +" in html


def test_an_equal_retrain_is_refused_under_superiority_and_accepted_under_non_inferiority(gate_ws):
    from pipeline.core.metadata import open_store

    # The same training again (a setting that changes nothing the model learns forces the rerun):
    # an equally good model, whatever the noise of multi-threaded training.
    refused = run(gate_ws, "equal-superiority", keep=4, steps=600)
    assert refused["steps"]["trainer"]["state"] == "ran"
    evaluation = refused["evaluation"]
    assert evaluation["blessed"] == 0
    [reason] = evaluation["reasons"]
    assert reason.startswith("overall accuracy ") and "95% CI" in reason and "McNemar p = " in reason
    assert reason.endswith("not better than the serving model by more than min_gain 0.0000 under superiority")
    assert refused["push"]["pushed"] == 0 and reason in refused["push"]["reason"]
    html = open(refused["report"], encoding="utf-8").read()
    assert "Not pushed, the serving model stays" in html

    accepted = run(gate_ws, "equal-non-inferiority", keep=4, policy="non_inferiority", steps=600)
    assert accepted["steps"]["trainer"]["state"] == "cached"  # the same candidate, another policy
    assert accepted["evaluation"]["blessed"] == 1, accepted["evaluation"]["reasons"]
    assert accepted["evaluation"]["comparisons"][0]["difference_ci"][0] > -0.03
    assert accepted["push"]["pushed"] == 1 and accepted["push"]["version"] == 3

    store = open_store(str(gate_ws / "root"))
    executions = store.executions_of("evaluator")
    outcome = store.execution_outcome(executions[0])["properties"]
    assert outcome["policy"] == "non_inferiority" and outcome["margin"] == 0.03
    assert outcome["comparisons"] == accepted["evaluation"]["comparisons"]


def test_rollback_and_status(gate_ws, capsys):
    versions = serving_versions(gate_ws)
    assert versions == [1, 2, 3]
    assert main(["rollback", "--pipeline-root", str(gate_ws / "root")]) == 0
    newest = serving_versions(gate_ws)[-1]
    assert newest == versions[-1] + 1
    capsys.readouterr()
    assert main(["status", "--pipeline-root", str(gate_ws / "root")]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["serving"]["version"] == newest
    assert status["serving"]["rolled_back_from"] == versions[-2]
    # Version 2 is the model trained on span 2.
    assert status["serving"]["spans"] == [2]
