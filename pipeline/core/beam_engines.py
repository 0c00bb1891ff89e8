"""Which Beam engine runs the data steps, and the job-server jar a portable engine needs.

Beam's Python FlinkRunner and SparkRunner submit the pipeline to a Java *job server*, a jar that
must match the Python SDK's version exactly (tensorflow/tfx#2035 is what a mismatch does).
Beam would download that jar itself from Maven Central's web address on first use; where the
network only reaches Maven Central through `mvn`, `scripts/ensure_job_server.sh flink|spark`
fetches it into the cache folder named here and this module hands its path to the runner.

In: the Beam options of a run (`--runner=...`, `--flink_job_server_jar=...`, ...).
Out: the runner's name, and the options with the cached jar added where the user named none.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.core.errors import ConfigError
from pipeline.core.ports import LOOPBACK, free_loopback_port

# The DirectRunner's in-process engine. Beam 2.72's DirectRunner would first try PrismRunner, a Go
# binary it downloads from GitHub at run time when the network allows: then the same command runs
# on a different engine on a laptop than offline or in CI, after executing an unverified download.
DEFAULT_BEAM_RUNNER = "FnApiRunner"
# Where ensure_job_server.sh keeps jars, unless MNIST_PIPELINE_JAR_CACHE names another folder.
JAR_CACHE_ENV = "MNIST_PIPELINE_JAR_CACHE"
DEFAULT_JAR_CACHE = os.path.join("~", ".cache", "mnist-tfx-pipeline", "jars")
# The Flink minor version the Flink job server is built for (Beam 2.72 offers 1.17 to 1.20).
FLINK_VERSION_ENV = "MNIST_PIPELINE_FLINK_VERSION"
DEFAULT_FLINK_VERSION = "1.20"


@dataclass(frozen=True)
class JobServer:
    """A portable engine's job server: the script's engine word, its Maven artifact id (without
    version) and the Beam option that takes a local jar."""

    engine: str
    artifact_id: str
    jar_option: str

    def jar_name(self, beam_version: str) -> str:
        """The jar's file name for `beam_version`, as Maven Central names it."""
        return f"{self.artifact_id}-{beam_version}.jar"


def job_servers() -> dict:
    """Runner name -> JobServer, for the runners that need a job server jar."""
    flink = os.environ.get(FLINK_VERSION_ENV, DEFAULT_FLINK_VERSION)
    return {
        "FlinkRunner": JobServer("flink", f"beam-runners-flink-{flink}-job-server", "--flink_job_server_jar"),
        "SparkRunner": JobServer("spark", "beam-runners-spark-3-job-server", "--spark_job_server_jar"),
    }


def _option_value(beam_args: Sequence[str], name: str) -> str | None:
    """The value of option `--name` in `beam_args` (either `--name=v` or `--name v`), or None."""
    args = list(beam_args)
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            return arg[len(name) + 1 :]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def with_default_runner(beam_args: Sequence[str]) -> list:
    """Returns `beam_args` as a list, with `--runner=FnApiRunner` first when no `--runner` is named.

    Every other option, and a runner the user names (DirectRunner, PrismRunner, PortableRunner,
    FlinkRunner, ...), passes through unchanged.
    """
    args = list(beam_args)
    if _option_value(args, "--runner") is not None:
        return args
    return [f"--runner={DEFAULT_BEAM_RUNNER}"] + args


def runner_name(beam_args: Sequence[str]) -> str:
    """The class name of the runner Beam builds from the options (FnApiRunner when none is
    named), resolved the way Beam resolves `--runner` ("flink", "FlinkRunner" and
    "flinkrunner" are all FlinkRunner)."""
    # Beam's own name table (pinned Beam); Beam (seconds to import) stays out of the CLI's start-up and the report.
    from apache_beam.runners.runner import _RUNNER_MAP  # noqa: PLC0415

    named = _option_value(beam_args, "--runner")
    if named is None:
        named = DEFAULT_BEAM_RUNNER
    qualified = _RUNNER_MAP.get(named.lower(), _RUNNER_MAP.get(named.lower() + "runner", named))
    return qualified.rsplit(".", 1)[-1]


def jar_cache_dir() -> str:
    """The folder ensure_job_server.sh fetches jars into (absolute)."""
    return os.path.abspath(os.path.expanduser(os.environ.get(JAR_CACHE_ENV) or DEFAULT_JAR_CACHE))


def beam_sdk_version() -> str:
    """The installed Beam SDK's version, which the job server jar must match."""
    from apache_beam.version import __version__  # noqa: PLC0415  Beam stays out of the CLI's start-up and the report

    return __version__


def with_job_server_jar(beam_args: Sequence[str]) -> list:
    """Returns `beam_args`, plus `--flink_job_server_jar=<cached jar>` (or Spark's) when the
    runner needs a job server and the options name no jar and no running job endpoint.

    Raises ConfigError, in one line naming the command that fetches the jar, when no jar matching
    the installed Beam SDK is cached.
    """
    args = list(beam_args)
    if _option_value(args, "--runner") is None:
        return args  # the in-process default; and no Beam import on a run that may be all cached
    server = job_servers().get(runner_name(args))
    if (
        server is None
        or _option_value(args, server.jar_option) is not None
        or _option_value(args, "--job_endpoint") is not None
    ):
        return args
    version = beam_sdk_version()
    jar = os.path.join(jar_cache_dir(), server.jar_name(version))
    if not os.path.isfile(jar):
        raise ConfigError(
            f"beam_args: {runner_name(args)} needs the Beam {version} job server jar {jar}: "
            f"fetch it with `scripts/ensure_job_server.sh {server.engine}`, or pass "
            f"--beam-arg={server.jar_option}=PATH_OR_URL (Beam downloads a URL itself)"
        )
    return args + [f"{server.jar_option}={jar}"]


def start_local_job_service(timeout_s: float = 60.0) -> tuple:
    """Starts Beam's Python job service (the portable protocol Flink and Spark speak, run by
    the SDK itself) on a free loopback port; returns (its process, "localhost:<port>") once it
    accepts connections. The caller ends the process.

    Raises RuntimeError (the process killed) when it exits or does not listen within timeout_s.
    """
    port = free_loopback_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return process, f"localhost:{port}"
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                process.wait()
                raise RuntimeError(
                    f"Beam's local job service did not listen on port {port} within {timeout_s:g}s"
                ) from None
            time.sleep(0.5)
