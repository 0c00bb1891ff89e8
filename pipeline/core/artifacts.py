"""Where artifacts live on disk, and how a step's outputs are committed.

Layout (TFX's): `<pipeline_root>/<step>/<output>/<execution_id>/`. A step writes into
`<pipeline_root>/<step>/<output>/.staging-<execution_id>/`; the runner renames that to the
final name only after the step has returned. Anything still named `.staging-*` belongs to a
step that failed or was killed, and is removed by the next run, as is a final-named folder of an
execution that was killed before its outputs were recorded.
"""

from __future__ import annotations

import os
import re
import shutil

from pipeline.core.atomic_files import fsync_path
from pipeline.core.errors import ConfigError

_SAFE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# The property every artifact the core trusts carries: the sha256 of its content (a directory
# digest for outputs, a file or fingerprint digest for inputs from outside the root).
CONTENT_DIGEST = "content_digest"
RUNS_DIR = "runs"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"


def runs_dir(pipeline_root: str) -> str:
    """Where the per-run folders (`<run_id>/summary.json`, config.json, report) live."""
    return os.path.join(pipeline_root, RUNS_DIR)


def run_dir(pipeline_root: str, run_id: str) -> str:
    """The folder of one run."""
    return os.path.join(runs_dir(pipeline_root), run_id)


def check_local_path(key: str, path: str) -> str:
    """Returns `path` made absolute; ConfigError for URI schemes or empty values.

    key: the config key the path came from, for the error message.
    """
    if not path:
        raise ConfigError(f"config key {key}: must not be empty")
    if "://" in path:
        raise ConfigError(f"config key {key}: only local paths are supported, got {path!r}")
    return os.path.abspath(os.path.expanduser(path))


def contained(path: str, root: str) -> str:
    """Returns `path` if it lies inside `root` after resolving `..` and links; else ConfigError."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([real, real_root]) != real_root:
        raise ConfigError(f"path {path} escapes its root {root}")
    return path


def _output_parent(pipeline_root: str, step: str, output: str) -> str:
    for name in (step, output):
        if not _SAFE_NAME.match(name):
            raise ConfigError(f"unsafe step or output name {name!r}")
    return contained(os.path.join(pipeline_root, step, output), pipeline_root)


def staging_dir(pipeline_root: str, step: str, output: str, execution_id: int) -> str:
    """Creates and returns the empty staging directory of one output of one execution."""
    path = os.path.join(_output_parent(pipeline_root, step, output), f".staging-{execution_id}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def final_dir(pipeline_root: str, step: str, output: str, execution_id: int) -> str:
    """The committed location of one output of one execution."""
    return os.path.join(_output_parent(pipeline_root, step, output), str(execution_id))


def commit(staging: str, final: str) -> None:
    """Renames a finished staging directory to its final name (atomic on one file system)."""
    if os.path.exists(final):
        shutil.rmtree(final)  # left by a run killed between rename and its metadata record
    os.rename(staging, final)
    fsync_path(os.path.dirname(final))


def remove_stale_staging(pipeline_root: str) -> list[str]:
    """Deletes `.staging-*` directories left by failed or killed steps; returns their paths."""
    removed: list[str] = []
    if not os.path.isdir(pipeline_root):
        return removed
    for step in os.listdir(pipeline_root):
        step_dir = os.path.join(pipeline_root, step)
        if not os.path.isdir(step_dir) or step.startswith("."):
            continue
        for output in os.listdir(step_dir):
            output_dir = os.path.join(step_dir, output)
            if not os.path.isdir(output_dir):
                continue
            for name in os.listdir(output_dir):
                if name.startswith(".staging-"):
                    shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
                    removed.append(os.path.join(output_dir, name))
    return removed


def remove_uncommitted(pipeline_root: str, step_outputs: dict, execution_ids) -> list:
    """Deletes the final-named output folders of executions that never completed.

    A step killed after renaming its staging folder but before its metadata record leaves
    `<step>/<output>/<execution_id>/` that no artifact records: no run trusts it, and nothing
    else would ever remove it. Call only with ids of executions marked failed (abandoned),
    under the pipeline lock. step_outputs: step name -> its output names. Returns the paths
    removed.
    """
    removed = []
    for execution_id in execution_ids:
        for step, outputs in step_outputs.items():
            for output in outputs:
                path = final_dir(pipeline_root, step, output, execution_id)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                    removed.append(path)
    return removed
