"""One pipeline run across processes, as a scheduler runs it: the data half of the real
pipeline, each step its own `run_local.py --run-id ID --from S --to S` process, makes one run
record whose steps read that run's outputs, even when another run writes newer ones between
two of its steps. (The rules on fake steps: test_runner.py.)"""

import json
import os
import subprocess
import sys

from mnist_slices import write_mnist_slice

from pipeline.core.metadata import open_store

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = "manual__2026-12-07T22:00:00+00:00"
OTHER_RUN = "scheduled__2026-12-08T22:00:00+00:00"
DATA_STEPS = ["example_gen", "statistics_gen", "schema_gen", "example_validator"]


def run_local(*args) -> subprocess.CompletedProcess:
    """One run_local.py process."""
    return subprocess.run(
        [sys.executable, os.path.join(PROJECT, "run_local.py"), *args],
        env=dict(os.environ, PYTHONPATH=PROJECT, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=600,
    )


def task(root, data, step, run_id=RUN) -> subprocess.CompletedProcess:
    """One scheduler task: step `step` of run `run_id`."""
    return run_local(
        "--data-root", data, "--pipeline-root", root, "--run-id", run_id, "--from", step, "--to", step
    )


def test_the_data_half_step_by_step_is_one_run_reading_its_own_outputs(tmp_path, small_mnist):
    root = str(tmp_path / "root")
    other_data = write_mnist_slice(str(tmp_path / "other_data"), 1000, 200, offset=5000)

    first = task(root, small_mnist, "example_gen")
    assert first.returncode == 0, first.stderr[-3000:]
    # Another run writes newer examples (other data) before this run's next step.
    other = run_local("--data-root", other_data, "--pipeline-root", root, "--to", "example_gen")
    assert other.returncode == 0, other.stderr[-3000:]

    # Out of order: a new run cannot start at schema_gen; one line, exit 2, nothing recorded.
    refused = task(root, small_mnist, "schema_gen", run_id=OTHER_RUN)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"error: run {OTHER_RUN}: step schema_gen refused: called out of order, step example_gen "
        "before it has not completed in this run (not run yet)"
    )
    assert not os.path.exists(os.path.join(root, "runs", OTHER_RUN))

    for step in DATA_STEPS[1:]:
        done = task(root, small_mnist, step)
        assert done.returncode == 0, done.stderr[-3000:]
    again = task(root, small_mnist, "example_validator")
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"error: run {RUN}: step example_validator refused: step example_validator already ran in this "
        "run, and a step runs once per run; start a new --run-id to run it again"
    )

    run_dir = os.path.join(root, "runs", RUN)
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert [summary["steps"][s]["state"] for s in DATA_STEPS] == ["ran"] * 4
    assert summary["steps"]["trainer"]["state"] == "skipped"
    assert [c["steps"] for c in summary["calls"]] == [[s] for s in DATA_STEPS]
    assert summary["data"]["spans"] == [0] and summary["data"]["data_root"] == small_mnist
    assert summary["report"] == os.path.join(run_dir, "report.html") and os.path.isfile(summary["report"])

    # Every step read this run's examples, not the other run's newer ones.
    store = open_store(root)
    examples = {
        "run": summary["steps"]["example_gen"]["execution_id"],
        "other": json.load(open(_summary_of_other_run(root)))["steps"]["example_gen"]["execution_id"],
    }
    run_examples, other_examples = (store.outputs_of(e)["examples"] for e in examples.values())
    assert other_examples > run_examples  # the newest Examples are the other run's
    statistics = store.inputs_of(summary["steps"]["statistics_gen"]["execution_id"])
    assert statistics["examples"] == run_examples
    validator = store.inputs_of(summary["steps"]["example_validator"]["execution_id"])
    assert (
        validator["statistics"]
        == store.outputs_of(summary["steps"]["statistics_gen"]["execution_id"])["statistics"]
    )

    # `runs` shows the run once, with its four steps.
    listed = run_local("runs", "--pipeline-root", root, "--json")
    runs = [r for r in json.loads(listed.stdout) if r["run_id"] == RUN]
    assert len(runs) == 1 and runs[0]["ran"] == 4 and runs[0]["status"] == "completed"


def _summary_of_other_run(root) -> str:
    [other] = [r for r in os.listdir(os.path.join(root, "runs")) if r != RUN]
    return os.path.join(root, "runs", other, "summary.json")
