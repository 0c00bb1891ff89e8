"""The MNIST pipeline as an Airflow DAG (`mnist_pipeline`): one task per pipeline step, each
`run_local.py --run-id <DAG run id> --from STEP --to STEP` in the pipeline's own venv, so that
one DAG run is one pipeline run (one `runs/<run id>/summary.json` holding every step).

When it runs: on a cron schedule (Variable mnist_pipeline_schedule, default hourly; "none" for
new spans only) and whenever a new span's ready marker (`span-N/_SUCCESS`) lands in the data
root (an Asset watched by mnist_span_trigger.SpanReadyTrigger). One run at a time.

Settings of a run (DAG params, e.g. `airflow dags test mnist_pipeline -c '{"train_steps": 50}'`);
each one not given comes from the Airflow Variable `mnist_pipeline_<name>`, else the pipeline's own
default:
    data_root, pipeline_root, serving_dir, config (a TOML or JSON config file), train_steps,
    on_data_gate ("fail", the default, or "skip": what the data gate's exit 3 does to the task).
Read when the file is parsed (Variables only): repo (the checkout holding run_local.py and
.venv; default the folder above this file), data_root (the folder the new-span trigger watches),
schedule, span_ready_marker (default "_SUCCESS"), lock_retries (default 3) and
lock_retry_delay_s (default 300): how often and how long after a step that found the pipeline
root locked (exit 4) it is tried again.

This file imports nothing of the pipeline (Airflow's venv has no TensorFlow): it only builds
commands (mnist_pipeline_step.py).
"""

from __future__ import annotations

import datetime
import os

from airflow.sdk import (
    DAG,
    Asset,
    AssetOrTimeSchedule,
    AssetWatcher,
    CronTriggerTimetable,
    Param,
    Variable,
    chain,
)
from mnist_pipeline_step import ON_DATA_GATE, PipelineStepOperator
from mnist_span_trigger import SpanReadyTrigger

DAG_ID = "mnist_pipeline"
STEPS = (
    "example_gen",
    "statistics_gen",
    "schema_gen",
    "example_validator",
    "trainer",
    "evaluator",
    "pusher",
)
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def variable(name: str, default: str) -> str:
    """The Airflow Variable `mnist_pipeline_<name>` (an AIRFLOW_VAR_MNIST_PIPELINE_<NAME>
    environment variable counts too), else `default`."""
    return Variable.get(f"mnist_pipeline_{name}", default=default)


def count_variable(name: str, default: int) -> int:
    """Variable `mnist_pipeline_<name>` as an integer >= 0; raises ValueError naming it."""
    value = variable(name, str(default))
    if not value.strip().isdigit():
        raise ValueError(f"Airflow Variable mnist_pipeline_{name}: must be an integer >= 0, got {value!r}")
    return int(value)


def schedule(cron: str, new_span: Asset):
    """Runs on `cron` (UTC) and on every event of `new_span`; on new spans only for "none"."""
    if cron.strip().lower() == "none":
        return new_span
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=new_span)


repo = variable("repo", CHECKOUT)
# A relative data root is relative to the checkout, as for the steps (they run there).
watched_root = os.path.normpath(os.path.join(repo, variable("data_root", os.path.join("data", "mnist"))))
new_span = Asset(
    name="mnist_pipeline_new_span",
    uri=f"file://{watched_root}",
    watchers=[
        AssetWatcher(
            name="mnist_span_ready_marker",
            trigger=SpanReadyTrigger(
                data_root=watched_root, marker=variable("span_ready_marker", "_SUCCESS")
            ),
        )
    ],
)


def optional_text(description: str) -> Param:
    return Param(None, type=["null", "string"], description=description)


with DAG(
    dag_id=DAG_ID,
    description="MNIST training pipeline: validate a new span, train, evaluate, push if blessed",
    doc_md=__doc__,
    schedule=schedule(variable("schedule", "0 * * * *"), new_span),
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": count_variable("lock_retries", 3),
        "retry_delay": datetime.timedelta(seconds=count_variable("lock_retry_delay_s", 300)),
    },
    params={
        "data_root": optional_text("folder of the four MNIST files or of span-N/ folders"),
        "pipeline_root": optional_text("where artifacts, metadata and runs/ go"),
        "serving_dir": optional_text("where blessed models are published"),
        "config": optional_text("the pipeline's TOML or JSON config file"),
        "train_steps": Param(
            None, type=["null", "integer"], minimum=1, description="override trainer.train_steps"
        ),
        "on_data_gate": Param(
            None,
            type=["null", "string"],
            enum=[None, *ON_DATA_GATE],
            description="what the data gate's exit 3 does to its task: fail (alert) or skip",
        ),
    },
    tags=["mnist"],
) as dag:
    chain(*(PipelineStepOperator(step=step, repo=repo) for step in STEPS))
