"""Crash safety and one-writer-at-a-time, black box: real `run_local.py` processes, SIGKILLed
while a step (the push included) is writing; the next run resumes and ends as a clean run would.
"""

import glob
import json
import os
import signal
import time

import pytest
from pipeline_process import slice_and_config, start
from run_configs import small_lenient

from pipeline.core.digest import directory_digest

CONFIG = small_lenient(train_steps=120)  # the slice_and_config fixture's config


@pytest.fixture(scope="module")
def data_and_config(tmp_path_factory):
    return slice_and_config(tmp_path_factory.mktemp("crash"))


def kill_when(process, pattern: str, timeout: float = 300) -> bool:
    """SIGKILLs `process` as soon as a path matching `pattern` exists; False if it never did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if glob.glob(pattern):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.02)
    process.kill()
    process.wait()
    return False


def trusted_state(root) -> dict:
    """Serving versions, live artifacts and their verification, from disk and the metadata store."""
    from pipeline.core.metadata import open_store

    store = open_store(str(root))
    live = {}
    for type_name in (
        "Examples",
        "ExampleStatistics",
        "Schema",
        "ExampleAnomalies",
        "Model",
        "ModelEvaluation",
        "ModelBlessing",
    ):
        for artifact in store.artifacts_of_type(type_name):
            assert directory_digest(artifact.uri) == artifact.properties["content_digest"], artifact.uri
            live.setdefault(type_name, 0)
            live[type_name] += 1
    serving = os.path.join(str(root), "serving")
    versions = sorted(n for n in os.listdir(serving) if n.isdigit()) if os.path.isdir(serving) else []
    return {
        "versions": versions,
        "staging": glob.glob(os.path.join(str(root), "**", ".staging-*"), recursive=True),
    }


@pytest.mark.parametrize(
    "step_pattern",
    [
        "example_gen/examples/.staging-*/Split-*",
        "statistics_gen/statistics/.staging-*",
        "trainer/model_run/.staging-*/*",
        "serving/.staging-*",
    ],
)
def test_killed_run_resumes_to_the_same_end_state(tmp_path, data_and_config, step_pattern):
    data, config = data_and_config
    root = tmp_path / "root"
    victim = start(data, config, root)
    assert kill_when(victim, os.path.join(str(root), step_pattern)), "the step never started"

    # Nothing the killed step wrote is trusted: no serving version appeared half-written.
    for version in glob.glob(os.path.join(str(root), "serving", "[0-9]*")):
        assert os.path.exists(os.path.join(version, "saved_model.pb"))

    resumed = start(data, config, root)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    summary = json.load(open(str(root) + ".summary.json"))
    assert summary["push"]["pushed"] == 1 and summary["push"]["version"] == 1
    state = trusted_state(root)
    assert state["versions"] == ["1"]
    assert state["staging"] == []
    # Steps completed before the kill are reused, not redone.
    if step_pattern.startswith(("statistics_gen", "trainer", "serving")):
        assert summary["steps"]["example_gen"]["state"] == "cached"
    if step_pattern.startswith("serving"):
        assert summary["steps"]["trainer"]["state"] == "cached"


def test_two_concurrent_runs_one_waits_then_gives_up_with_status_4(tmp_path, data_and_config):
    data, config = data_and_config
    root = tmp_path / "root"
    first = start(data, config, root, "--to", "statistics_gen")
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(str(root), ".pipeline.lock")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    cfg = tmp_path / "short_wait.toml"
    cfg.write_text(CONFIG.replace("[trainer]", "lock_timeout_s = 1.0\n\n[trainer]"))
    second = start(data, str(cfg), root)
    out, _ = second.communicate(timeout=120)
    first_out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, first_out[-3000:]
    assert second.returncode == 4, out[-3000:]
    assert "holds the lock" in out
    assert trusted_state(root)["staging"] == []
