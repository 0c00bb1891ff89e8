"""The statistical promotion gate through the whole pipeline, on a few thousand real digits:
a weak first model is pushed (floors only); a clearly stronger candidate is pushed over it; an
equally good retrain is refused under superiority and accepted under
non-inferiority. Every decision carries its paired statistics in decision.json, the summary
and ML Metadata, and the report shows them."""

import json
import os

import pytest
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


def test_weak_first_model_then_a_stronger_one_is_pushed(gate_ws):
    first = run(gate_ws, "weak", steps=40)
    assert first["push"]["pushed"] == 1 and first["push"]["version"] == 1
    assert first["evaluation"]["policy"] is None and first["evaluation"]["comparisons"] == []
    weak = first["evaluation"]["metrics"]["candidate"]["overall"]["accuracy"]

    # A new span of the same size, disjoint digits; ten times the training.
    write_mnist_slice(str(gate_ws / "data" / "span-2"), 1500, 1000, offset=1500)
    strong = run(gate_ws, "strong", steps=600)
    evaluation = strong["evaluation"]
    assert evaluation["blessed"] == 1, evaluation["reasons"]
    assert strong["push"]["pushed"] == 1 and strong["push"]["version"] == 2
    overall = evaluation["comparisons"][0]
    assert overall["slice"] == "overall" and overall["n"] == 1000
    assert overall["candidate_only"] > overall["baseline_only"]
    assert overall["difference_ci"][0] > 0 and overall["p_value"] < 0.001
    assert evaluation["metrics"]["candidate"]["overall"]["accuracy"] > weak
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
