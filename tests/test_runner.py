"""The runner on fake steps: order, caching, commit-on-completion, gates, partial runs, lock."""

import dataclasses
import errno
import json
import multiprocessing
import os
import shutil
import time

import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline.core import artifacts
from pipeline.core.errors import InputDataError, LockTimeoutError
from pipeline.core.lock import exclusive_lock
from pipeline.core.pipeline import Pipeline
from pipeline.core.runner import run_pipeline
from pipeline.core.step import InputSpec, StepOutcome, StepSpec
from pipeline.metadata_settings import back_up_after_run

CALLS = []
NUMBERS = {"text": "1 2 3\n"}


def make_numbers(ctx):
    CALLS.append(ctx.step_name)
    with open(os.path.join(ctx.outputs["numbers"], "numbers.txt"), "w") as f:
        f.write(NUMBERS["text"])
    return StepOutcome(execution_properties={"count": 3}, output_properties={"numbers": {"count": 3}})


def sum_numbers(ctx):
    CALLS.append(ctx.step_name)
    with open(os.path.join(ctx.inputs["numbers"].uri, "numbers.txt")) as f:
        total = sum(int(x) for x in f.read().split())
    with open(os.path.join(ctx.outputs["total"], "total.txt"), "w") as f:
        f.write(str(total))
    return StepOutcome(execution_properties={"total": total})


def gate(ctx):
    CALLS.append(ctx.step_name)
    with open(os.path.join(ctx.outputs["report"], "report.txt"), "w") as f:
        f.write("anomaly: total too small\n")
    if ctx.params.get("stop"):
        return StepOutcome(stop_run="data validation failed: total too small", stop_exit_code=3)
    return StepOutcome()


def half_write_then_fail(ctx):
    CALLS.append(ctx.step_name)
    with open(os.path.join(ctx.outputs["total"], "total.txt"), "w") as f:
        f.write("partial")
    raise InputDataError("numbers.txt: record 2 is not a number")


def fake_pipeline(tmp_path, *, gate_stop=False, second=sum_numbers, params=None) -> Pipeline:
    steps = (
        StepSpec("example_gen", {}, {"numbers": "Numbers"}, make_numbers, params or {"n": 3}),
        StepSpec(
            "statistics_gen",
            {"numbers": InputSpec(producer="example_gen.numbers")},
            {"total": "Total"},
            second,
            {},
        ),
        StepSpec(
            "example_validator",
            {"total": InputSpec(producer="statistics_gen.total")},
            {"report": "Report"},
            gate,
            {"stop": gate_stop},
        ),
    )
    # The application's backup hook, as the factory passes it (test_metadata_store relies on it).
    return Pipeline(
        steps=steps, root=str(tmp_path / "root"), lock_timeout_s=1.0, store_written=back_up_after_run
    )


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.clear()


def states(result):
    return {name: step["state"] for name, step in result.summary["steps"].items()}


def test_runs_in_order_then_fully_cached(tmp_path):
    first = run_pipeline(fake_pipeline(tmp_path))
    assert first.exit_code == 0
    assert CALLS == ["example_gen", "statistics_gen", "example_validator"]
    assert states(first) == {"example_gen": "ran", "statistics_gen": "ran", "example_validator": "ran"}
    total_uri = first.summary["steps"]["statistics_gen"]["outputs"]["total"]
    execution_id = first.summary["steps"]["statistics_gen"]["execution_id"]
    assert total_uri == str(tmp_path / "root" / "statistics_gen" / "total" / str(execution_id))
    assert open(os.path.join(total_uri, "total.txt")).read() == "6"

    CALLS.clear()
    second = run_pipeline(fake_pipeline(tmp_path))
    assert second.exit_code == 0
    assert CALLS == []
    assert set(states(second).values()) == {"cached"}
    assert second.summary["steps"]["statistics_gen"]["outputs"]["total"] == total_uri


def test_changed_parameters_rerun_the_step_and_its_dependants(tmp_path):
    run_pipeline(fake_pipeline(tmp_path))
    CALLS.clear()
    result = run_pipeline(fake_pipeline(tmp_path, params={"n": 4}))
    # example_gen reruns; its output has the same content, so the dependants' inputs have the
    # same fingerprint and stay cached.
    assert states(result)["example_gen"] == "ran"
    assert states(result)["statistics_gen"] == "cached"


def test_deleted_or_corrupted_cached_output_is_recomputed(tmp_path):
    first = run_pipeline(fake_pipeline(tmp_path))
    numbers = first.summary["steps"]["example_gen"]["outputs"]["numbers"]
    with open(os.path.join(numbers, "numbers.txt"), "w") as f:
        f.write("1 2 4\n")  # tampered
    CALLS.clear()
    second = run_pipeline(fake_pipeline(tmp_path))
    # The tampered artifact is recomputed. Its rebuilt content is identical to what the
    # dependants consumed, so their cached outputs are still exactly right and are reused.
    assert CALLS == ["example_gen"]
    assert states(second)["example_gen"] == "ran"
    assert (
        open(os.path.join(second.summary["steps"]["example_gen"]["outputs"]["numbers"], "numbers.txt")).read()
        == "1 2 3\n"
    )
    assert (
        open(os.path.join(second.summary["steps"]["statistics_gen"]["outputs"]["total"], "total.txt")).read()
        == "6"
    )


def test_deleted_output_reruns_only_its_step(tmp_path):
    first = run_pipeline(fake_pipeline(tmp_path))
    os.remove(os.path.join(first.summary["steps"]["statistics_gen"]["outputs"]["total"], "total.txt"))
    CALLS.clear()
    run_pipeline(fake_pipeline(tmp_path))
    assert CALLS == ["statistics_gen"]


def test_dependants_rerun_when_the_recomputed_input_differs(tmp_path, monkeypatch):
    first = run_pipeline(fake_pipeline(tmp_path))
    shutil.rmtree(first.summary["steps"]["example_gen"]["outputs"]["numbers"])
    monkeypatch.setitem(NUMBERS, "text", "4 5 6\n")  # the raw data behind it changed meanwhile
    CALLS.clear()
    second = run_pipeline(fake_pipeline(tmp_path))
    assert CALLS == ["example_gen", "statistics_gen", "example_validator"]
    assert (
        open(os.path.join(second.summary["steps"]["statistics_gen"]["outputs"]["total"], "total.txt")).read()
        == "15"
    )


def test_failed_step_commits_nothing_and_skips_the_rest(tmp_path):
    result = run_pipeline(fake_pipeline(tmp_path, second=half_write_then_fail))
    assert result.exit_code == 3
    assert states(result) == {
        "example_gen": "ran",
        "statistics_gen": "failed",
        "example_validator": "skipped",
    }
    assert "record 2 is not a number" in result.summary["steps"]["statistics_gen"]["error"]
    total_dir = tmp_path / "root" / "statistics_gen" / "total"
    assert list(total_dir.iterdir()) == []  # no staging, no committed folder
    # The failed execution is in MLMD as FAILED with no outputs.
    store = _client(tmp_path)
    [execution] = store.get_executions_by_type("statistics_gen")
    assert execution.last_known_state == metadata_store_pb2.Execution.FAILED
    assert not [
        e
        for e in store.get_events_by_execution_ids([execution.id])
        if e.type == metadata_store_pb2.Event.OUTPUT
    ]


def test_gate_stop_keeps_report_exits_3_and_stays_stopped_when_cached(tmp_path):
    result = run_pipeline(fake_pipeline(tmp_path, gate_stop=True))
    assert result.exit_code == 3
    assert "total too small" in result.summary["message"]
    report = result.summary["steps"]["example_validator"]["outputs"]["report"]
    assert os.path.exists(os.path.join(report, "report.txt"))
    again = run_pipeline(fake_pipeline(tmp_path, gate_stop=True))
    assert states(again)["example_validator"] == "cached"
    assert again.exit_code == 3


def test_from_and_to_run_only_the_requested_steps(tmp_path):
    run_pipeline(fake_pipeline(tmp_path))
    CALLS.clear()
    from_second = run_pipeline(
        fake_pipeline(tmp_path, params={"n": 5}), from_step="statistics_gen", to_step="statistics_gen"
    )
    assert states(from_second) == {
        "example_gen": "skipped",
        "statistics_gen": "cached",
        "example_validator": "skipped",
    }
    assert CALLS == []
    only_first = run_pipeline(fake_pipeline(tmp_path / "fresh"), to_step="example_gen")
    assert states(only_first) == {
        "example_gen": "ran",
        "statistics_gen": "skipped",
        "example_validator": "skipped",
    }


def test_from_without_upstream_outputs_is_a_usage_error(tmp_path):
    result = run_pipeline(fake_pipeline(tmp_path), from_step="statistics_gen")
    assert result.exit_code == 2
    assert "no completed outputs" in result.summary["message"]


def test_summary_and_config_written_per_run(tmp_path):
    extra = tmp_path / "extra" / "summary.json"
    result = run_pipeline(fake_pipeline(tmp_path), summary_json=str(extra))
    run_dir = tmp_path / "root" / "runs" / result.summary["run_id"]
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == json.loads(extra.read_text())
    assert on_disk["steps"]["statistics_gen"]["properties"] == {"total": 6}
    assert json.loads((run_dir / "config.json").read_text())["pipeline_root"] == str(tmp_path / "root")


def test_lineage_is_readable_with_the_ml_metadata_client(tmp_path):
    run_pipeline(fake_pipeline(tmp_path))
    store = _client(tmp_path)
    [total] = store.get_artifacts_by_type("Total")
    assert total.state == metadata_store_pb2.Artifact.LIVE
    [producer_event] = [
        e for e in store.get_events_by_artifact_ids([total.id]) if e.type == metadata_store_pb2.Event.OUTPUT
    ]
    inputs = [
        e
        for e in store.get_events_by_execution_ids([producer_event.execution_id])
        if e.type == metadata_store_pb2.Event.INPUT
    ]
    [numbers] = store.get_artifacts_by_id([inputs[0].artifact_id])
    assert numbers.uri.endswith(os.path.join("example_gen", "numbers", str(numbers.uri.split("/")[-1])))
    assert len(store.get_contexts_by_type("pipeline_run")) == 1


def _hold_lock(path, seconds, ready):
    with exclusive_lock(path, timeout_s=0):
        ready.set()
        time.sleep(seconds)


def test_second_run_waits_then_exits_4_while_the_lock_is_held(tmp_path):
    pipeline = fake_pipeline(tmp_path)
    os.makedirs(pipeline.root)
    ready = multiprocessing.Event()
    holder = multiprocessing.Process(
        target=_hold_lock, args=(os.path.join(pipeline.root, ".pipeline.lock"), 5, ready)
    )
    holder.start()
    try:
        assert ready.wait(10)
        started = time.monotonic()
        with pytest.raises(LockTimeoutError, match="holds the lock"):
            run_pipeline(pipeline)
        assert time.monotonic() - started >= 0.9  # it waited lock_timeout_s before giving up
        assert CALLS == []
    finally:
        holder.join()
    assert run_pipeline(pipeline).exit_code == 0  # free again once the holder is gone


def _client(tmp_path):
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(tmp_path / "root" / "metadata.sqlite")
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def sum_numbers_holding_memory(ctx):
    ballast = bytearray(300 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page so it is resident
    del ballast
    return sum_numbers(ctx)


def test_each_step_reports_its_own_peak_memory(tmp_path):
    result = run_pipeline(fake_pipeline(tmp_path, second=sum_numbers_holding_memory))
    peaks = {name: step["peak_memory_mib"] for name, step in result.summary["steps"].items()}
    assert all(peak > 0 for peak in peaks.values())
    # The 300 MiB of the second step count in its peak only: the peak is reset between steps.
    assert peaks["statistics_gen"] >= peaks["example_gen"] + 250
    assert peaks["example_validator"] < peaks["statistics_gen"] - 250
    cached = run_pipeline(fake_pipeline(tmp_path, second=sum_numbers_holding_memory))
    assert all("peak_memory_mib" not in step for step in cached.summary["steps"].values())


def test_a_shared_module_a_step_imports_is_part_of_that_steps_code_fingerprint(tmp_path, monkeypatch):
    """A comment added to a module that one step imports (lazily, from another package) reruns
    that step and not the others."""
    from pipeline.core import fingerprint

    project = tmp_path / "project"
    for package, files in {
        "fake_steps": {
            "numbers.py": "def run():\n    from fake_shared import util\n    return util\n",
            "total.py": "TOTAL = 1\n",
        },
        "fake_shared": {"util.py": "FACTOR = 2\n"},
    }.items():
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text("")
        for name, text in files.items():
            (project / package / name).write_text(text)
    monkeypatch.syspath_prepend(str(project))
    shared_files = fingerprint.project_files(("fake_steps.numbers",))
    assert str((project / "fake_shared" / "util.py").resolve()) in shared_files
    assert str((project / "fake_shared" / "util.py").resolve()) not in fingerprint.project_files(
        ("fake_steps.total",)
    )

    def run_states():
        fingerprint.code_fingerprint.cache_clear()
        steps = (
            StepSpec(
                "example_gen",
                {},
                {"numbers": "Numbers"},
                make_numbers,
                {"n": 3},
                code_modules=("fake_steps.numbers",),
            ),
            StepSpec(
                "statistics_gen",
                {"numbers": InputSpec(producer="example_gen.numbers")},
                {"total": "Total"},
                sum_numbers,
                {},
                code_modules=("fake_steps.total",),
            ),
        )
        result = run_pipeline(Pipeline(steps=steps, root=str(tmp_path / "root"), lock_timeout_s=1.0))
        assert result.exit_code == 0
        return [result.summary["steps"][n]["state"] for n in ("example_gen", "statistics_gen")]

    assert run_states() == ["ran", "ran"]
    assert run_states() == ["cached", "cached"]
    util = project / "fake_shared" / "util.py"
    util.write_text(util.read_text() + "# a comment\n")
    assert run_states() == ["ran", "cached"]
    total = project / "fake_steps" / "total.py"
    total.write_text(total.read_text() + "# a comment\n")
    assert run_states() == ["cached", "ran"]


def test_a_step_declares_its_summary_entry_and_the_runner_knows_no_step(tmp_path):
    """The runner lifts what a step's `summary` returns to the top of the run summary; it has
    no entry of its own for any step name."""
    steps = (
        StepSpec(
            "example_gen",
            {},
            {"numbers": "Numbers"},
            make_numbers,
            {"n": 3},
            summary=lambda report: {"numbers_made": report.properties.get("count")},
        ),
        StepSpec(
            "statistics_gen",
            {"numbers": InputSpec(producer="example_gen.numbers")},
            {"total": "Total"},
            sum_numbers,
            {},
            summary=lambda report: {
                "total": {"state": report.state, "from": report.inputs["numbers"].type_name}
            },
        ),
    )
    result = run_pipeline(
        Pipeline(
            steps=steps, root=str(tmp_path / "root"), lock_timeout_s=1.0, summary_fields={"where": "here"}
        )
    )
    assert result.summary["numbers_made"] == 3 and result.summary["where"] == "here"
    assert result.summary["total"] == {"state": "ran", "from": "Numbers"}
    assert not {"evaluation", "push", "data"} & set(result.summary)


def test_declare_reads_a_declaration_module_and_checks_its_inputs():
    import types

    from pipeline.core.errors import ConfigError
    from pipeline.core.step import Input, declare

    module = types.ModuleType("steps_pkg.counter.component")
    module.INPUTS, module.OUTPUTS, module.CACHEABLE = {"numbers": Input("Numbers")}, {"count": "Count"}, False
    module.PARAMS = dict
    module.summary = lambda report, params: {"count": params["scale"]}
    spec = declare(module, {"numbers": InputSpec(producer="a.numbers")}, {"scale": 2})
    assert (spec.name, spec.executor, spec.code_modules, spec.cacheable) == (
        "counter",
        "steps_pkg.counter.executor:run",
        ("steps_pkg.counter",),
        False,
    )
    assert spec.summary(None) == {"count": 2}
    with pytest.raises(ConfigError, match=r"step counter: inputs \['other'\] do not match"):
        declare(module, {"other": InputSpec(producer="a.numbers")}, {})


# ---- one run made of several calls (--run-id) ----------------------------------------------
AIRFLOW_ID = "manual__2026-12-07T22:00:00+00:00"
STEPS = ("example_gen", "statistics_gen", "example_validator")
FLAKY = {"failures_left": 0}


def fail_then_sum(ctx):
    if FLAKY["failures_left"]:
        FLAKY["failures_left"] -= 1
        CALLS.append(ctx.step_name)
        raise RuntimeError("the disk went away")
    return sum_numbers(ctx)


def read_report(ctx):
    CALLS.append(ctx.step_name)
    shutil.copy(os.path.join(ctx.inputs["report"].uri, "report.txt"), ctx.outputs["model"])
    return StepOutcome()


def with_trainer(pipeline: Pipeline) -> Pipeline:
    """`pipeline` plus a step after the gate, so that the gate is not the last step."""
    trainer = StepSpec(
        "trainer", {"report": InputSpec(producer="example_validator.report")}, {"model": "Model"}, read_report
    )
    return Pipeline(steps=(*pipeline.steps, trainer), root=pipeline.root, lock_timeout_s=1.0)


def call(pipeline, step, run_id=AIRFLOW_ID, to=None):
    """One scheduler task: the step `step` (to `to`) of run `run_id`."""
    return run_pipeline(pipeline, from_step=step, to_step=to or step, run_id=run_id)


def recorded(tmp_path, run_id=AIRFLOW_ID) -> dict:
    return json.loads((tmp_path / "root" / "runs" / run_id / "summary.json").read_text())


def test_calls_with_one_run_id_make_one_run_record_with_every_step(tmp_path):
    pipeline = fake_pipeline(tmp_path)
    results = [call(pipeline, step) for step in STEPS]
    assert [r.exit_code for r in results] == [0, 0, 0]
    assert CALLS == list(STEPS)
    assert os.listdir(tmp_path / "root" / "runs") == [AIRFLOW_ID]  # the id, unchanged, names it
    summary = recorded(tmp_path)
    assert summary == results[-1].summary
    assert summary["run_id"] == AIRFLOW_ID and summary["status"] == "completed"
    assert states(results[-1]) == dict.fromkeys(STEPS, "ran")
    assert [c["steps"] for c in summary["calls"]] == [[s] for s in STEPS]
    assert summary["started"] == results[0].summary["started"]
    # The first call's entry is kept as it ran: the same execution, not a reuse.
    assert summary["steps"]["example_gen"] == results[0].summary["steps"]["example_gen"]
    # Between calls, the steps not run yet are skipped, and say so.
    assert results[0].summary["steps"]["example_validator"] == {
        "state": "skipped",
        "execution_id": None,
        "outputs": {},
        "seconds": 0.0,
        "reason": "not run yet in this run",
    }
    store = _client(tmp_path)
    [context] = store.get_contexts_by_type("pipeline_run")
    assert context.name == AIRFLOW_ID
    assert sorted(e.id for e in store.get_executions_by_context(context.id)) == [
        summary["steps"][s]["execution_id"] for s in STEPS
    ]


def test_a_call_reads_the_outputs_of_its_own_run_not_the_newest(tmp_path, monkeypatch):
    pipeline = fake_pipeline(tmp_path)
    first = call(pipeline, "example_gen")
    run_numbers = first.summary["steps"]["example_gen"]["outputs"]["numbers"]
    monkeypatch.setitem(NUMBERS, "text", "4 5 6\n")
    # Another run (other parameters, so not cached) writes a newer example_gen output meanwhile.
    other = run_pipeline(fake_pipeline(tmp_path, params={"n": 4}), to_step="example_gen")
    assert other.summary["steps"]["example_gen"]["state"] == "ran"
    assert other.summary["steps"]["example_gen"]["outputs"]["numbers"] != run_numbers

    second = call(pipeline, "statistics_gen")
    assert second.exit_code == 0
    total = second.summary["steps"]["statistics_gen"]["outputs"]["total"]
    assert open(os.path.join(total, "total.txt")).read() == "6"  # 1 2 3, this run's numbers
    store = _client(tmp_path)
    [numbers_event] = [
        e
        for e in store.get_events_by_execution_ids(
            [second.summary["steps"]["statistics_gen"]["execution_id"]]
        )
        if e.type == metadata_store_pb2.Event.INPUT
    ]
    assert store.get_artifacts_by_id([numbers_event.artifact_id])[0].uri == run_numbers


def test_a_step_called_out_of_order_is_refused_before_the_lock(tmp_path):
    from pipeline.core.run_record import CallRefused

    pipeline = fake_pipeline(tmp_path)
    os.makedirs(pipeline.root)
    ready = multiprocessing.Event()
    holder = multiprocessing.Process(
        target=_hold_lock, args=(os.path.join(pipeline.root, ".pipeline.lock"), 5, ready)
    )
    holder.start()
    try:
        assert ready.wait(10)
        # Refused, not LockTimeoutError: the record is read before the lock is waited for.
        with pytest.raises(CallRefused) as refused:
            call(pipeline, "statistics_gen")
    finally:
        holder.join()
    assert refused.value.exit_code == 2
    assert str(refused.value) == (
        f"run {AIRFLOW_ID}: step statistics_gen refused: called out of order, step example_gen "
        "before it has not completed in this run (not run yet)"
    )
    assert CALLS == [] and not os.path.exists(tmp_path / "root" / "runs" / AIRFLOW_ID)
    call(pipeline, "example_gen")
    with pytest.raises(
        CallRefused, match="step example_validator refused: called out of order, step statistics_gen"
    ):
        call(pipeline, "example_validator")
    assert CALLS == ["example_gen"] and len(recorded(tmp_path)["calls"]) == 1


def test_a_step_that_completed_in_the_run_is_refused_not_run_twice(tmp_path):
    from pipeline.core.run_record import CallRefused

    pipeline = fake_pipeline(tmp_path)
    call(pipeline, "example_gen")
    call(pipeline, "statistics_gen")
    for first, to in (("statistics_gen", "statistics_gen"), ("example_gen", "example_validator")):
        with pytest.raises(CallRefused, match="already ran in this run, and a step runs once per run"):
            call(pipeline, first, to=to)
    assert CALLS == ["example_gen", "statistics_gen"]


def test_a_finished_run_takes_no_more_calls(tmp_path):
    from pipeline.core.run_record import CallRefused

    pipeline = fake_pipeline(tmp_path)
    call(pipeline, "example_gen", to="example_validator")
    with pytest.raises(
        CallRefused, match="the run has finished \\(its last step example_validator completed\\)"
    ):
        call(pipeline, "example_validator")

    # A gate that stops the run finishes it too, even when it is not the last step.
    gated = with_trainer(fake_pipeline(tmp_path / "gated", gate_stop=True))
    for step in STEPS:
        result = call(gated, step)
    assert result.exit_code == 3 and states(result)["example_validator"] == "ran"
    CALLS.clear()
    with pytest.raises(
        CallRefused, match="the run has finished \\(step example_validator stopped it \\(exit 3\\)\\)"
    ):
        call(gated, "trainer")
    assert CALLS == []
    assert recorded(tmp_path / "gated")["steps"]["trainer"]["state"] == "skipped"


def test_a_failed_step_is_retried_in_the_same_run(tmp_path, monkeypatch):
    from pipeline.core.run_record import CallRefused

    monkeypatch.setitem(FLAKY, "failures_left", 1)
    pipeline = fake_pipeline(tmp_path, second=fail_then_sum)
    call(pipeline, "example_gen")
    failed = call(pipeline, "statistics_gen")
    assert failed.exit_code == 1 and failed.summary["message"] == "statistics_gen failed: the disk went away"
    with pytest.raises(CallRefused, match="the run stopped when step statistics_gen failed; retry that step"):
        call(pipeline, "example_validator")

    retried = call(pipeline, "statistics_gen")
    assert retried.exit_code == 0 and retried.summary["status"] == "completed"
    assert states(retried) == {"example_gen": "ran", "statistics_gen": "ran", "example_validator": "skipped"}
    assert call(pipeline, "example_validator").exit_code == 0
    assert CALLS == ["example_gen", "statistics_gen", "statistics_gen", "example_validator"]
    summary = recorded(tmp_path)
    assert [(c["steps"], c["exit_code"], c["stopped_at"]) for c in summary["calls"]] == [
        (["example_gen"], 0, None),
        (["statistics_gen"], 1, "statistics_gen"),
        (["statistics_gen"], 0, None),
        (["example_validator"], 0, None),
    ]
    # The retry read the same upstream output as the failed try.
    store = _client(tmp_path)
    tries = sorted(store.get_executions_by_type("statistics_gen"), key=lambda e: e.id)
    assert [e.last_known_state for e in tries] == [
        metadata_store_pb2.Execution.FAILED,
        metadata_store_pb2.Execution.COMPLETE,
    ]
    inputs = [
        [
            ev.artifact_id
            for ev in store.get_events_by_execution_ids([e.id])
            if ev.type == metadata_store_pb2.Event.INPUT
        ]
        for e in tries
    ]
    assert inputs[0] == inputs[1] and len(inputs[0]) == 1


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "-x", ".hidden", "a b", "x" * 201, "run\n1"])
def test_a_run_id_that_cannot_name_a_folder_is_a_usage_error(tmp_path, bad):
    from pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match="a run id is 1-200 letters, digits and") as error:
        call(fake_pipeline(tmp_path), "example_gen", run_id=bad)
    assert error.value.exit_code == 2 and CALLS == []
    assert not os.path.exists(tmp_path / "root")


def test_a_run_keeps_the_configuration_it_started_with(tmp_path):
    import dataclasses

    from pipeline.core.run_record import CallRefused

    pipeline = dataclasses.replace(fake_pipeline(tmp_path), run_config={"trainer": {"train_steps": 10}})
    call(pipeline, "example_gen", run_id="scheduled__2026-12-07T22:00:00+00:00")
    changed = dataclasses.replace(pipeline, run_config={"trainer": {"train_steps": 20}})
    with pytest.raises(
        CallRefused, match="configuration differs from the one the run started with \\(key trainer"
    ):
        call(changed, "statistics_gen", run_id="scheduled__2026-12-07T22:00:00+00:00")
    assert call(pipeline, "statistics_gen", run_id="scheduled__2026-12-07T22:00:00+00:00").exit_code == 0


def test_a_run_of_its_own_keeps_its_summary_shape_and_takes_no_calls(tmp_path):
    from pipeline.core.run_record import CallRefused

    own = run_pipeline(fake_pipeline(tmp_path), to_step="example_gen")
    assert "calls" not in own.summary
    with pytest.raises(CallRefused, match="holds a run made by one call, which takes no more calls"):
        call(fake_pipeline(tmp_path), "statistics_gen", run_id=own.summary["run_id"])


def train_on_report(ctx):
    CALLS.append(ctx.step_name)
    with open(os.path.join(ctx.outputs["model"], "model.txt"), "w") as f:
        f.write("trained")
    return StepOutcome()


def test_from_a_step_after_a_gate_that_stopped_its_run_stops_again(tmp_path):
    """The gate's stop is part of what a later `--from` reuses: nothing trains on refused data."""

    def with_trainer(pipeline: Pipeline) -> Pipeline:
        trainer = StepSpec(
            "trainer",
            {"report": InputSpec(producer="example_validator.report")},
            {"model": "Model"},
            train_on_report,
            {},
        )
        return dataclasses.replace(pipeline, steps=(*pipeline.steps, trainer))

    assert run_pipeline(with_trainer(fake_pipeline(tmp_path, gate_stop=True))).exit_code == 3
    CALLS.clear()
    again = run_pipeline(with_trainer(fake_pipeline(tmp_path, gate_stop=True)), from_step="trainer")
    assert again.exit_code == 3
    assert "total too small" in again.summary["message"]
    assert states(again)["trainer"] == "skipped" and CALLS == []


def numbers_and_a_copy(ctx):
    CALLS.append(ctx.step_name)
    for out in ("numbers", "copy"):
        with open(os.path.join(ctx.outputs[out], "numbers.txt"), "w") as f:
            f.write(NUMBERS["text"])
    return StepOutcome()


def test_a_failure_between_two_commit_renames_leaves_no_output_folder(tmp_path, monkeypatch):
    """The second output's rename fails (a full disk): the first, already renamed but never
    recorded, is removed with the staging folders; the step fails in one line, exit 1."""
    real_commit = artifacts.commit
    renamed: list = []

    def commit(staging, final):
        renamed.append(final)
        if len(renamed) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), final)
        real_commit(staging, final)

    monkeypatch.setattr(artifacts, "commit", commit)
    pipeline = fake_pipeline(tmp_path)
    two = dataclasses.replace(
        pipeline.steps[0], outputs={"numbers": "Numbers", "copy": "Numbers"}, executor=numbers_and_a_copy
    )
    result = run_pipeline(
        dataclasses.replace(pipeline, steps=(two, *pipeline.steps[1:])), to_step="example_gen"
    )
    assert result.exit_code == 1 and states(result)["example_gen"] == "failed"
    assert len(renamed) == 2 and not any(os.path.exists(path) for path in renamed)
    leftovers = [
        name
        for out in ("numbers", "copy")
        if os.path.isdir(tmp_path / "root" / "example_gen" / out)
        for name in os.listdir(tmp_path / "root" / "example_gen" / out)
    ]
    assert leftovers == []
