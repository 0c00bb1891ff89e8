"""deploy/: the systemd units (checked by `systemd-analyze verify`, exit statuses as on-call needs
them) and the cron line (its schedule, its command and the wrapper's mail-or-not behaviour on real
runs of run_local.py)."""

import os
import re
import shlex
import shutil
import signal
import subprocess

import pytest

from pipeline.cli import build_run_parser
from pipeline.core.errors import EXIT_DATA_GATE, EXIT_LOCKED, EXIT_OK, EXIT_USAGE
from pipeline.core.lock import exclusive_lock, pipeline_lock_path

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(PROJECT, "deploy")
SYSTEMD = os.path.join(DEPLOY, "systemd")
CRON_FILE = os.path.join(DEPLOY, "cron", "mnist-pipeline.cron")
# Where the deploy files expect the checkout; the tests put this checkout there instead.
INSTALL_PREFIX = "/opt/mnist-pipeline"
SERVICE = "mnist-pipeline.service"
UNIT_FILES = ("mnist-pipeline.service", "mnist-pipeline.timer", "mnist-pipeline-failed@.service")


def _installed_units(dest) -> list:
    """Copies deploy/systemd/ into `dest` with the install prefix pointing at this checkout."""
    paths = []
    for name in UNIT_FILES:
        with open(os.path.join(SYSTEMD, name), encoding="utf-8") as f:
            text = f.read().replace(INSTALL_PREFIX, PROJECT)
        path = dest / name
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return paths


def _unit_settings(name: str) -> dict:
    """{(section, key): [values...]} of a unit file in deploy/systemd (keys may repeat)."""
    settings: dict = {}
    section = None
    with open(os.path.join(SYSTEMD, name), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail(
            "systemd-analyze is missing in CI: scripts/test.sh installs it (scripts/ensure_systemd_analyze.sh)"
        )
    pytest.skip(
        "systemd-analyze not installed (apt-get install -y systemd, or scripts/ensure_systemd_analyze.sh)"
    )


def _verify(*paths) -> tuple:
    """(exit status, the output lines about our units) of `systemd-analyze verify`."""
    done = subprocess.run(
        [_systemd_analyze(), "verify", "--man=no", *paths], capture_output=True, text=True, timeout=120
    )
    ours = [line for line in (done.stdout + done.stderr).splitlines() if "mnist-pipeline" in line]
    return done.returncode, ours


# ------------------------------------------------------------------ systemd


def test_systemd_units_verify_without_a_warning(tmp_path):
    status, complaints = _verify(*_installed_units(tmp_path))
    assert status == 0 and complaints == []


def test_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a missing command is an error, a misspelt key a warning."""
    service, _, _ = _installed_units(tmp_path)
    text = open(service, encoding="utf-8").read()
    open(service, "w", encoding="utf-8").write(text.replace("scripts/run_pipeline.sh", "scripts/missing.sh"))
    status, complaints = _verify(service)
    assert status != 0 and any("missing.sh" in line for line in complaints)
    open(service, "w", encoding="utf-8").write(text.replace("SuccessExitStatus=", "SuccesExitStatus="))
    _, complaints = _verify(service)
    assert any("SuccesExitStatus" in line for line in complaints)


def test_lock_held_is_success_and_the_data_gate_is_a_failure_on_call_hears_of():
    service = _unit_settings(SERVICE)
    success = " ".join(service[("Service", "SuccessExitStatus")]).split()
    # 0 is success anyway; 1, 2 and 3 stay failures; a stop (SIGTERM: 128 + 15) is no alert.
    assert success == [str(EXIT_LOCKED), str(128 + signal.SIGTERM)]
    assert ("Service", "Restart") not in service  # a data-gate stop is not retried blindly
    assert service[("Service", "Type")] == ["oneshot"]
    [on_failure] = service[("Unit", "OnFailure")]
    template = re.sub(r"@%n\.service$", "@.service", on_failure)
    assert template != on_failure and os.path.isfile(os.path.join(SYSTEMD, template))
    alert = _unit_settings(template)
    assert alert[("Service", "SyslogLevel")] == ["err"]
    assert "deploy/describe_exit.sh" in alert[("Service", "ExecStart")][0]
    timer = _unit_settings("mnist-pipeline.timer")
    assert ("Timer", "Unit") not in timer and timer[("Timer", "OnCalendar")] == ["hourly"]
    command = service[("Service", "ExecStart")][0].split()
    assert command[0] == f"{INSTALL_PREFIX}/scripts/run_pipeline.sh"
    build_run_parser().parse_args(command[1:])  # every option exists (argparse exits 2 otherwise)


def test_the_on_failure_unit_reports_the_failed_runs_exit_status(tmp_path):
    """Runs the alert unit's ExecStart= as systemd would (specifiers and $$ expanded), with a
    stand-in `systemctl` that answers the failed unit's ExecMainStatus."""
    [command] = _unit_settings("mnist-pipeline-failed@.service")[("Service", "ExecStart")]
    command = command.replace("$$", "$").replace("%i", SERVICE).replace(INSTALL_PREFIX, PROJECT)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text(
        '#!/bin/sh\n[ "$*" = "show --property=ExecMainStatus --value mnist-pipeline.service" ] && echo 3\n'
    )
    (fake / "systemctl").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, env=env, check=True)
    assert done.stdout == (
        "mnist pipeline run was stopped by the data gate (bad data, drift, or no complete span yet); "
        f"nothing was pushed: exit 3; see journalctl -u {SERVICE} and run_local.py runs\n"
    )


@pytest.mark.parametrize(
    "status, words",
    [
        (EXIT_DATA_GATE, "was stopped by the data gate"),
        (EXIT_USAGE, "refused its configuration"),
        (1, "failed"),
        (EXIT_LOCKED, "did not start: another run holds the pipeline lock"),
        (137, "ended abnormally"),
        (143, "was stopped (SIGINT 130, SIGTERM 143)"),
        (130, "was stopped (SIGINT 130, SIGTERM 143)"),
    ],
)
def test_the_on_call_line_names_the_exit_status(status, words):
    done = subprocess.run(
        [os.path.join(DEPLOY, "describe_exit.sh"), str(status), "see journalctl -u x"],
        capture_output=True,
        text=True,
        check=True,
    )
    [line] = done.stdout.splitlines()
    assert line.startswith(f"mnist pipeline run {words}") and line.endswith(
        f"exit {status}; see journalctl -u x"
    )


# ------------------------------------------------------------------ cron

_FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def _field_ok(field: str, low: int, high: int) -> bool:
    """One cron time field: *, N, N-M, each with an optional /STEP, comma-separated."""
    for item in field.split(","):
        match = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", item)
        if not match:
            return False
        start, end, step = match.group(2), match.group(3), match.group(4)
        values = [int(v) for v in (start, end) if v is not None]
        if any(not low <= v <= high for v in values) or (end and int(end) < int(start)):
            return False
        if step is not None and int(step) < 1:
            return False
    return True


def _cron_jobs() -> list:
    """[(five time fields, command)] of deploy/cron's crontab (comments and VAR=value skipped)."""
    jobs = []
    with open(CRON_FILE, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or re.match(r"^[A-Za-z_][A-Za-z0-9_]*\s*=", line):
                continue
            parts = line.split(None, 5)
            assert len(parts) == 6, f"{CRON_FILE}: not five time fields and a command: {line!r}"
            jobs.append((parts[:5], parts[5]))
    return jobs


def test_field_parser_refuses_what_cron_refuses():
    assert _field_ok("0", 0, 59) and _field_ok("*/15", 0, 59) and _field_ok("1-5,7", 0, 7)
    assert not _field_ok("60", 0, 59) and not _field_ok("5-1", 0, 59) and not _field_ok("*/0", 0, 59)
    assert not _field_ok("hourly", 0, 59) and not _field_ok("", 0, 59)


def test_the_cron_line_is_hourly_and_runs_a_command_of_this_checkout():
    [(fields, command)] = _cron_jobs()
    assert all(_field_ok(f, low, high) for f, (low, high) in zip(fields, _FIELD_RANGES))
    assert fields == ["0", "*", "*", "*", "*"]
    assert "%" not in command  # cron turns an unescaped % into a newline
    program, log, *options = command.split()
    assert program.startswith(INSTALL_PREFIX + "/")
    local = PROJECT + program[len(INSTALL_PREFIX) :]
    assert os.path.isfile(local) and os.access(local, os.X_OK)
    assert os.path.isabs(log) and not log.startswith("-")
    build_run_parser().parse_args(options)  # every option exists (argparse exits 2 otherwise)


def _cron_run(tmp_path, *options) -> tuple:
    """Runs the cron line's wrapper on this checkout; (exit status, stdout = what cron mails, log)."""
    [(_, command)] = _cron_jobs()
    program = PROJECT + command.split()[0][len(INSTALL_PREFIX) :]
    log = tmp_path / "logs" / "pipeline.log"
    done = subprocess.run([program, str(log), *options], capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout, log.read_text(encoding="utf-8") if log.exists() else ""


def test_cron_wrapper_help_is_quiet_and_logged(tmp_path):
    status, mailed, log = _cron_run(tmp_path, "--help")
    assert status == EXIT_OK and mailed == ""
    assert "usage: run_local.py" in log and "--data-root" in log


def test_cron_wrapper_mails_one_line_when_the_data_gate_stops_the_run(tmp_path):
    data = tmp_path / "data"
    (data / "span-1").mkdir(parents=True)  # a delivery still being copied: no _SUCCESS yet
    config = tmp_path / "c.toml"
    config.write_text('[data]\nspan_ready_marker = "_SUCCESS"\n')
    root = tmp_path / "root"
    status, mailed, log = _cron_run(
        tmp_path, "--config", str(config), "--data-root", str(data), "--pipeline-root", str(root)
    )
    assert status == EXIT_DATA_GATE
    [line] = mailed.splitlines()
    assert "stopped by the data gate" in line and "exit 3" in line
    assert "error: " in line and "no complete span" in line and str(tmp_path / "logs") in line
    assert "not ready" in log


def test_cron_wrapper_is_quiet_when_another_run_holds_the_lock(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("lock_timeout_s = 0\n")
    root = tmp_path / "root"
    with exclusive_lock(pipeline_lock_path(str(root)), timeout_s=0):
        status, mailed, log = _cron_run(tmp_path, "--config", str(config), "--pipeline-root", str(root))
    assert status == EXIT_LOCKED and mailed == ""
    assert "holds the lock" in log and "another run holds the pipeline lock: exit 4" in log


def test_cron_wrapper_refuses_a_missing_log_file_argument():
    [(_, command)] = _cron_jobs()
    program = PROJECT + command.split()[0][len(INSTALL_PREFIX) :]
    done = subprocess.run([program, "--data-root", "/data"], capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_USAGE and done.stderr.startswith("usage: ") and done.stdout == ""
