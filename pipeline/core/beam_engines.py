"""Which Beam engine runs the data steps, and the job-server jar a portable engine needs.

Beam's Python FlinkRunner and SparkRunner submit the pipeline to a Java *job server*, a jar that
must match the Python SDK's version exactly (tensorflow/tfx#2035 is what a mismatch does).
Beam would download that jar itself from Maven Central's web address on first use; where the
network only reaches Maven Central through `mvn`, `scripts/ensure_job_server.sh flink|spark`
fetches it into the cache folder named here and this module hands its path to the runner.

It also decides which engines may run the pipeline at all. A gate that runs on an engine that
silently drops records is not a gate: Beam's DaskRunner accepts the pipeline's options and
gives wrong answers without an error (docs/engines.md), so it is refused. The engines whose
results tests/test_beam_engines.py compares field by field with the in-process engine's run;
Flink, Spark and Dataflow, which cannot be tried on this project's machines, run with a
warning; any other runner only when the config sets `allow_untested_runner = true`.

In: the Beam options of a run (`--runner=...`, `--flink_job_server_jar=...`, ...).
Out: the runner's name, whether it may run (and the warning it runs with), and the options
with the cached jar added where the user named none.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

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

# Beam 2.72's table of runner names (apache_beam.runners.runner._RUNNER_MAP: lower-case class
# name -> class), copied so that checking a config does not import Beam (seconds);
# tests/test_engine_guard.py checks the copy against the installed Beam's.
_BEAM_RUNNER_MODULES = {
    "DataflowRunner": "apache_beam.runners.dataflow.dataflow_runner",
    "BundleBasedDirectRunner": "apache_beam.runners.direct.direct_runner",
    "DirectRunner": "apache_beam.runners.direct.direct_runner",
    "SwitchingDirectRunner": "apache_beam.runners.direct.direct_runner",
    "InteractiveRunner": "apache_beam.runners.interactive.interactive_runner",
    "FlinkRunner": "apache_beam.runners.portability.flink_runner",
    "FnApiRunner": "apache_beam.runners.portability.fn_api_runner",
    "PortableRunner": "apache_beam.runners.portability.portable_runner",
    "PrismRunner": "apache_beam.runners.portability.prism_runner",
    "SparkRunner": "apache_beam.runners.portability.spark_runner",
    "TestDirectRunner": "apache_beam.runners.test",
    "TestDataflowRunner": "apache_beam.runners.test",
    "PythonRPCDirectRunner": "apache_beam.runners.experimental.python_rpc_direct.python_rpc_direct_runner",
}
BEAM_RUNNER_MAP = {name.lower(): f"{module}.{name}" for name, module in _BEAM_RUNNER_MODULES.items()}

# The engines tests/test_beam_engines.py runs on every run of the suite and compares, field by
# field, with the in-process engine (Beam's local job service speaks the portable protocol).
COMPARED_RUNNERS = ("FnApiRunner", "PortableRunner")
# The engines that test compares only where their job server can be had, or never (Dataflow
# needs a Google Cloud project): they run, with one warning.
UNTRIED_RUNNERS = ("FlinkRunner", "SparkRunner", "DataflowRunner")
# What was measured on a real dask cluster (docs/engines.md#dask): refused, whatever the config.
DASK_REFUSAL = (
    "Beam's DaskRunner gives wrong results without an error (measured: TFDV counted 2,973 of "
    "3,000 examples and TFMA wrote no metrics file; see docs/engines.md#dask), and "
    "allow_untested_runner does not change that"
)
# The config key that lets any other runner run (pipeline/config.py).
OPT_IN_KEY = "allow_untested_runner"


class Engine(Enum):
    """What this project knows of a runner's results."""

    COMPARED = "compared"  # equal to the in-process engine's, on every run of the tests
    UNTRIED = "untried"  # cannot be tried here: runs with a warning
    UNTESTED = "untested"  # never compared: runs only with the opt-in, and a warning
    WRONG = "wrong"  # known to give wrong results: never runs
    UNKNOWN = "unknown"  # Beam would refuse the name itself when the first step starts


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
    """The value of option `--name` in `beam_args` (either `--name=v` or `--name v`), or None;
    the last one when it is given more than once, as Beam's argument parser takes it."""
    args = list(beam_args)
    value = None
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            value = arg[len(name) + 1 :]
        elif arg == name and i + 1 < len(args):
            value = args[i + 1]
    return value


def with_default_runner(beam_args: Sequence[str]) -> list:
    """Returns `beam_args` as a list, with `--runner=FnApiRunner` first when no `--runner` is named.

    Every other option, and a runner the user names (DirectRunner, PrismRunner, PortableRunner,
    FlinkRunner, ...), passes through unchanged.
    """
    args = list(beam_args)
    if _option_value(args, "--runner") is not None:
        return args
    return [f"--runner={DEFAULT_BEAM_RUNNER}"] + args


def _runner_class(beam_args: Sequence[str]) -> str:
    """The runner class Beam builds from the options: "module.Class" (FnApiRunner's when none
    is named), resolved the way Beam 2.72's `create_runner` resolves `--runner` ("flink",
    "FlinkRunner" and "flinkrunner" are all FlinkRunner; a dotted name is taken as it is). A
    name Beam does not know comes back as it is, without a dot."""
    named = _option_value(beam_args, "--runner")
    if named is None:
        named = DEFAULT_BEAM_RUNNER
    return BEAM_RUNNER_MAP.get(named.lower(), BEAM_RUNNER_MAP.get(named.lower() + "runner", named))


def runner_name(beam_args: Sequence[str]) -> str:
    """The class name of the runner Beam builds from the options (FnApiRunner when none is
    named; see `_runner_class`)."""
    return _runner_class(beam_args).rsplit(".", 1)[-1]


def classify_runner(beam_args: Sequence[str]) -> Engine:
    """What is known of the results of the runner the options select (see `Engine`)."""
    qualified = _runner_class(beam_args)
    name = qualified.rsplit(".", 1)[-1]
    if name.lower() in ("dask", "daskrunner"):  # any spelling, the module path included
        return Engine.WRONG
    if "." not in qualified:
        return Engine.UNKNOWN
    if qualified in (BEAM_RUNNER_MAP[n.lower()] for n in COMPARED_RUNNERS):
        return Engine.COMPARED
    if qualified in (BEAM_RUNNER_MAP[n.lower()] for n in UNTRIED_RUNNERS):
        return Engine.UNTRIED
    return Engine.UNTESTED


def runner_refusal(beam_args: Sequence[str], allow_untested_runner: bool) -> str | None:
    """Why the runner the options select must not run the pipeline, in one line; None when it
    may (it may still come with `runner_warning`)."""
    engine = classify_runner(beam_args)
    named = _option_value(beam_args, "--runner")
    if engine is Engine.WRONG:
        return f"--runner={named} is refused: {DASK_REFUSAL}"
    if engine is Engine.UNKNOWN:
        known = ", ".join(sorted(_BEAM_RUNNER_MODULES))
        return f"Beam knows no runner {named!r} (known: {known}; or a module.ClassName)"
    if engine is Engine.UNTESTED and not allow_untested_runner:
        return (
            f"--runner={named} is refused: this project has not compared its results with the "
            f"in-process engine's (compared: {', '.join(COMPARED_RUNNERS)}; run with a warning: "
            f"{', '.join(UNTRIED_RUNNERS)}); leave --runner out for the in-process engine, or set "
            f"{OPT_IN_KEY} = true to run on it anyway"
        )
    return None


def runner_warning(beam_args: Sequence[str], allow_untested_runner: bool) -> str | None:
    """The one warning a run on an engine whose results were not compared here starts with;
    None for the compared engines (and for refused ones: see `runner_refusal`)."""
    engine = classify_runner(beam_args)
    name = runner_name(beam_args)
    if engine is Engine.UNTRIED:
        return (
            f"{name} runs the data steps, but its results have not been compared with the "
            f"in-process engine's on this project's machines (docs/engines.md#same-results-on-every-engine); "
            f"check its split counts and statistics against an in-process run"
        )
    if engine is Engine.UNTESTED and allow_untested_runner:
        return (
            f"{name} runs the data steps ({OPT_IN_KEY} = true); this project has never compared "
            f"its results with the in-process engine's"
        )
    return None


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
