"""One pipeline step as an Airflow task: `run_local.py --run-id RUN --from STEP --to STEP` in the
pipeline's own venv, its exit status turned into the task's state.

The step runs as a separate process of the pipeline's venv (`<repo>/.venv/bin/python`): Airflow's
venv has no TensorFlow and cannot have it (protobuf 7 against TensorFlow 2.15's protobuf 4.25), so
this module only builds a command. Its settings reach the command as environment variables,
never pasted into the bash text, so a path with spaces or quotes stays one argument.

Exit status -> task state:
    0  success;
    3  the data gate stopped the run: failed without retry, the run's one-line reason last in the
       log (downstream tasks become upstream_failed); with on_data_gate = "skip", skipped instead
       (downstream skipped, the DAG run succeeds: no alert);
    4  another run holds the pipeline root's lock: failed for now, retried after retry_delay;
    anything else (1 failure, 2 bad usage or configuration, killed): failed without retry.
"""

from __future__ import annotations

import shutil
from typing import Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
)
from airflow.providers.standard.operators.bash import BashOperator

# The pipeline's exit statuses (pipeline/core/errors.py; tests/test_airflow.py checks they agree).
EXIT_OK = 0
EXIT_DATA_GATE = 3
EXIT_LOCKED = 4

ON_DATA_GATE = ("fail", "skip")

# Runs one step. The settings come as MNIST_* environment variables (empty = the pipeline's own
# default). The output goes to the task log as it comes and to a temporary file, so that on a
# non-zero exit the pipeline's one-line reason ("error: ...") can be repeated as the last line:
# the operator makes it the task's failure message.
STEP_SCRIPT = r"""
set -u
python="$MNIST_REPO/.venv/bin/python"
if [ ! -x "$python" ]; then
  echo "error: the pipeline's venv is missing ($python): run $MNIST_REPO/scripts/ensure_venv.sh"
  exit 2
fi
args=(run_local.py --run-id "$MNIST_RUN_ID" --from "$MNIST_STEP" --to "$MNIST_STEP")
[ -n "$MNIST_DATA_ROOT" ] && args+=(--data-root "$MNIST_DATA_ROOT")
[ -n "$MNIST_PIPELINE_ROOT" ] && args+=(--pipeline-root "$MNIST_PIPELINE_ROOT")
[ -n "$MNIST_SERVING_DIR" ] && args+=(--serving-dir "$MNIST_SERVING_DIR")
[ -n "$MNIST_CONFIG" ] && args+=(--config "$MNIST_CONFIG")
[ -n "$MNIST_TRAIN_STEPS" ] && args+=(--train-steps "$MNIST_TRAIN_STEPS")
output=$(mktemp) || exit 1
trap 'rm -f "$output"' EXIT
echo "running: $python ${args[*]}"
set -o pipefail
# Nothing of Airflow's Python setup may leak into the pipeline's interpreter.
env -u PYTHONPATH -u PYTHONHOME PYTHONUNBUFFERED=1 "$python" "${args[@]}" 2>&1 | tee "$output"
status=$?
if [ "$status" -ne 0 ]; then
  reason=$(grep '^error: ' "$output" | tail -n 1)
  echo "${reason:-error: run_local.py exited with status $status}"
fi
exit "$status"
"""


def setting(name: str, default: str = "") -> str:
    """A Jinja expression for setting `name`: the run's param when given (`dags test -c`, the
    trigger form), else the Airflow Variable `mnist_pipeline_<name>`, else `default`."""
    return (
        f"{{{{ params.{name} if params.{name} is not none "
        f"else var.value.get('mnist_pipeline_{name}', {default!r}) }}}}"
    )


class PipelineStepOperator(BashOperator):
    """Runs pipeline step `step` of the DAG run (its run id is the pipeline's run id) in the
    pipeline's venv under `repo`; maps the exit status to the task state (module docstring).

    on_data_gate (templated): "fail" or "skip", what exit 3 does. Raises AirflowFailException
    when it is anything else.
    """

    template_fields = (*BashOperator.template_fields, "on_data_gate")

    def __init__(self, *, step: str, repo: str, **kwargs: Any) -> None:
        env = {
            "MNIST_REPO": repo,
            "MNIST_STEP": step,
            "MNIST_RUN_ID": "{{ run_id }}",
            "MNIST_DATA_ROOT": setting("data_root"),
            "MNIST_PIPELINE_ROOT": setting("pipeline_root"),
            "MNIST_SERVING_DIR": setting("serving_dir"),
            "MNIST_CONFIG": setting("config"),
            "MNIST_TRAIN_STEPS": setting("train_steps"),
        }
        super().__init__(
            task_id=step,
            bash_command=STEP_SCRIPT,
            env=env,
            append_env=True,
            cwd=repo,
            skip_on_exit_code=None,
            **kwargs,
        )
        self.step = step
        self.on_data_gate = setting("on_data_gate", "fail")

    def execute(self, context: Any) -> str:
        """Runs the step; returns its last output line (the summary's path) as the XCom."""
        if self.on_data_gate not in ON_DATA_GATE:
            raise AirflowFailException(
                f"setting on_data_gate: must be one of {', '.join(ON_DATA_GATE)}, got {self.on_data_gate!r}"
            )
        result = self.subprocess_hook.run_command(
            command=[shutil.which("bash") or "bash", "-c", self.bash_command],
            env=self.get_env(context),
            output_encoding=self.output_encoding,
            cwd=self.cwd,
        )
        raise_for_exit(result.exit_code, result.output, self.on_data_gate)
        return result.output


def raise_for_exit(status: int, last_line: str, on_data_gate: str) -> None:
    """Raises the Airflow exception that gives a step ending with `status` its task state;
    `last_line` (the pipeline's one-line reason) becomes the message. Returns for status 0."""
    if status == EXIT_OK:
        return
    if status == EXIT_DATA_GATE:
        if on_data_gate == "skip":
            raise AirflowSkipException(
                f"stopped by the data gate (exit {status}), skipped as on_data_gate = skip: {last_line}"
            )
        raise AirflowFailException(f"stopped by the data gate (exit {status}): {last_line}")
    if status == EXIT_LOCKED:
        raise AirflowException(
            f"another run holds the pipeline root (exit {status}), retrying later: {last_line}"
        )
    raise AirflowFailException(f"step failed (exit {status}): {last_line}")
