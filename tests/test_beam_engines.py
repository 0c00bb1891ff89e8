"""Beam engines: the job-server jar a portable engine needs (the fetch script and how the pipeline
passes it), the `beam_runner` each Beam step records, and the same results on every engine.

The engine comparison runs the data half and the evaluator on the in-process engine and on each
other engine, and compares splits (the examples in each), statistics and evaluation metrics
field by field. Beam's local job service (the portable protocol Flink and Spark speak) always
runs; FlinkRunner [local] and SparkRunner local[2] run when `scripts/ensure_job_server.sh` can
provide their job-server jar, and are skipped with the script's own reason when it cannot.
"""

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import zipfile

import model_fixtures
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from mnist_slices import write_mnist_slice
from step_context import step_context

from pipeline.cli import main
from pipeline.core import beam_engines
from pipeline.core.errors import ConfigError
from pipeline.core.step import Artifact

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(PROJECT, "scripts", "ensure_job_server.sh")
BEAM_VERSION = beam_engines.beam_sdk_version()


# --- how the pipeline finds and passes the jar ------------------------------------------------


@pytest.fixture
def jar_cache(tmp_path, monkeypatch):
    cache = tmp_path / "jars"
    cache.mkdir()
    monkeypatch.setenv(beam_engines.JAR_CACHE_ENV, str(cache))
    return cache


@pytest.mark.parametrize(
    "args, runner",
    [
        ([], "FnApiRunner"),
        (["--runner=FlinkRunner", "--flink_master=[local]"], "FlinkRunner"),
        (["--spark_master_url=local[2]", "--runner", "SparkRunner"], "SparkRunner"),
        (["--runner=flink"], "FlinkRunner"),
        (["--runner", "direct"], "DirectRunner"),
    ],
)
def test_runner_name_is_what_the_options_select(args, runner):
    assert beam_engines.runner_name(args) == runner


def test_the_cached_jar_is_passed_when_the_user_names_none(jar_cache):
    jar = jar_cache / f"beam-runners-flink-1.20-job-server-{BEAM_VERSION}.jar"
    jar.write_bytes(b"jar")
    args = ["--runner=FlinkRunner", "--flink_master=[local]"]
    assert beam_engines.with_job_server_jar(args) == args + [f"--flink_job_server_jar={jar}"]


@pytest.mark.parametrize(
    "args",
    [
        ["--runner=FlinkRunner", "--flink_job_server_jar=/opt/my-flink-job-server.jar"],
        ["--runner=SparkRunner", "--spark_job_server_jar", "https://example.org/spark.jar"],
        ["--runner=FlinkRunner", "--job_endpoint=localhost:8099"],
        ["--runner=PortableRunner", "--job_endpoint=localhost:8099"],
        ["--direct_num_workers=2"],
    ],
)
def test_options_that_name_their_own_job_server_or_need_none_pass_unchanged(jar_cache, args):
    assert beam_engines.with_job_server_jar(args) == args


@pytest.mark.parametrize(
    "runner, engine", [("FlinkRunner", "flink"), ("SparkRunner", "spark"), ("flink", "flink")]
)
def test_no_cached_jar_names_the_command_that_fetches_it(jar_cache, runner, engine):
    with pytest.raises(ConfigError) as e:
        beam_engines.with_job_server_jar([f"--runner={runner}"])
    message = str(e.value)
    assert "\n" not in message
    assert f"scripts/ensure_job_server.sh {engine}" in message and BEAM_VERSION in message


def test_run_on_flink_without_a_jar_exits_2_before_any_step(tmp_path, jar_cache, tiny_mnist, capsys):
    root = tmp_path / "root"
    code = main(
        [
            "--data-root",
            tiny_mnist,
            "--pipeline-root",
            str(root),
            "--beam-arg=--runner=FlinkRunner",
            "--beam-arg=--flink_master=[local]",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "scripts/ensure_job_server.sh flink" in err
    assert not (root / "example_gen").exists()


# --- scripts/ensure_job_server.sh against a Maven repository of our own -----------------------


def _sha1_file(path: str) -> None:
    with open(path, "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()
    with open(path + ".sha1", "w") as f:
        f.write(digest)


def _publish(repo, flink_version: str, main_class=True, bad_checksum=False) -> bytes:
    """Writes org.apache.beam:beam-runners-flink-<flink_version>-job-server:<Beam version> into
    the file-system Maven repository `repo`; returns the jar's bytes."""
    artifact = f"beam-runners-flink-{flink_version}-job-server"
    folder = repo / "org" / "apache" / "beam" / artifact / BEAM_VERSION
    folder.mkdir(parents=True)
    jar = folder / f"{artifact}-{BEAM_VERSION}.jar"
    with zipfile.ZipFile(jar, "w") as z:
        manifest = "Manifest-Version: 1.0\n"
        if main_class:
            manifest += "Main-Class: org.apache.beam.runners.flink.FlinkJobServerDriver\n"
        z.writestr("META-INF/MANIFEST.MF", manifest)
        z.writestr("marker.txt", flink_version)
    pom = folder / f"{artifact}-{BEAM_VERSION}.pom"
    pom.write_text(
        f"<project><modelVersion>4.0.0</modelVersion><groupId>org.apache.beam</groupId>"
        f"<artifactId>{artifact}</artifactId><version>{BEAM_VERSION}</version></project>"
    )
    _sha1_file(str(jar))
    _sha1_file(str(pom))
    if bad_checksum:
        (folder / (jar.name + ".sha1")).write_text("0" * 40)
    return jar.read_bytes()


@pytest.fixture(scope="module")
def maven(tmp_path_factory):
    """A file-system Maven repository and a private local repository (so that nothing of ours
    reaches ~/.m2); the dependency plugin itself still comes from Maven Central."""
    if shutil.which("mvn") is None:
        pytest.fail("mvn is not installed: the job-server script needs it")
    base = tmp_path_factory.mktemp("maven")
    (base / "repo").mkdir()
    return base


def _script(maven, cache, flink_version: str, path=None) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        MNIST_PIPELINE_JAR_CACHE=str(cache),
        MNIST_PIPELINE_FLINK_VERSION=flink_version,
        MNIST_PIPELINE_MAVEN_REPO=(maven / "repo").as_uri(),
        MNIST_PIPELINE_MAVEN_LOCAL_REPO=str(maven / "m2"),
        PYTHON=sys.executable,
    )
    if path is not None:
        env["PATH"] = path
    return subprocess.run([SCRIPT, "flink"], env=env, capture_output=True, text=True, timeout=300)


def test_script_fetches_verifies_and_then_reuses_the_jar(maven, tmp_path):
    published = _publish(maven / "repo", "0.1test")
    cache = tmp_path / "jars"
    done = _script(maven, cache, "0.1test")
    assert done.returncode == 0, done.stderr
    jar = done.stdout.strip().splitlines()[-1]
    assert jar == str(cache / f"beam-runners-flink-0.1test-job-server-{BEAM_VERSION}.jar")
    assert open(jar, "rb").read() == published
    assert os.path.isfile(jar + ".sha256")
    assert [p for p in os.listdir(cache) if p.startswith(".fetch-")] == []

    # Idempotent, without Maven: a PATH with no mvn on it still gets the cached jar.
    no_mvn = tmp_path / "bin"
    no_mvn.mkdir()
    for tool in ("bash", "sha256sum", "dirname", "basename", "mktemp", "rm", "mv", "grep", "sed", "mkdir"):
        os.symlink(shutil.which(tool), no_mvn / tool)
    again = _script(maven, cache, "0.1test", path=str(no_mvn))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == jar

    # A cached jar that no longer matches its recorded digest is fetched again.
    with open(jar, "ab") as f:
        f.write(b"tampered")
    repaired = _script(maven, cache, "0.1test")
    assert repaired.returncode == 0, repaired.stderr
    assert "does not match its recorded SHA-256" in repaired.stderr
    assert open(jar, "rb").read() == published


@pytest.mark.parametrize(
    "flink_version, publish, expected",
    [
        ("0.2test", {"bad_checksum": True}, "Checksum validation failed"),
        ("0.3test", None, "Could not find artifact"),
        ("0.4test", {"main_class": False}, "is not a readable jar"),
    ],
)
def test_script_refuses_what_it_cannot_verify_and_caches_nothing(
    maven, tmp_path, flink_version, publish, expected
):
    if publish is not None:
        _publish(maven / "repo", flink_version, **publish)
    cache = tmp_path / "jars"
    done = _script(maven, cache, flink_version)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("ensure_job_server:")]
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert not any(name.endswith(".jar") for name in os.listdir(cache))


# --- the same results on every engine ----------------------------------------------------------


@pytest.fixture(scope="module")
def local_job_service():
    """Beam's Python job service on a free port; yields its endpoint."""
    try:
        service, endpoint = beam_engines.start_local_job_service()
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield endpoint
    finally:
        service.kill()
        service.wait()


def _engine_args(engine: str, request) -> list:
    """Beam options that select `engine`; skips when the engine's job server cannot be had."""
    if engine == "in-process":
        return []
    if engine == "portable":
        endpoint = request.getfixturevalue("local_job_service")
        return ["--runner=PortableRunner", f"--job_endpoint={endpoint}", "--environment_type=LOOPBACK"]
    word = {"flink": "flink", "spark": "spark"}[engine]
    fetched = subprocess.run(
        [SCRIPT, word],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, PYTHON=sys.executable),
    )
    if fetched.returncode != 0:
        pytest.skip(fetched.stderr.strip().splitlines()[-1])
    jar = fetched.stdout.strip().splitlines()[-1]
    if engine == "flink":
        return ["--runner=FlinkRunner", "--flink_master=[local]", f"--flink_job_server_jar={jar}"]
    return ["--runner=SparkRunner", "--spark_master_url=local[2]", f"--spark_job_server_jar={jar}"]


@pytest.fixture(scope="module")
def engine_data(tmp_path_factory):
    return write_mnist_slice(str(tmp_path_factory.mktemp("engine_data")), 1500, 300)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, engine_data):
    """The data half on the in-process engine: the results every engine must reproduce."""
    return _data_half(tmp_path_factory.mktemp("in_process"), engine_data, [])


def _data_half(base, data_root, beam_args) -> dict:
    summary_path = os.path.join(str(base), "summary.json")
    code = main(
        [
            "--data-root",
            data_root,
            "--pipeline-root",
            os.path.join(str(base), "root"),
            "--to",
            "statistics_gen",
            "--summary-json",
            summary_path,
        ]
        + [f"--beam-arg={arg}" for arg in beam_args]
    )
    summary = json.load(open(summary_path))
    assert code == 0, summary.get("message")
    return summary


def _records_by_split(examples_uri: str) -> dict:
    """{split: sorted SHA-256 of every example}: the examples in each split, whatever their order
    and sharding. Each record is parsed and serialized again deterministically: the encoder
    writes a tf.Example's feature map in an order that differs between processes."""
    out = {}
    for split in ("train", "eval", "test"):
        folder = os.path.join(examples_uri, f"Split-{split}")
        files = sorted(os.path.join(folder, name) for name in os.listdir(folder))
        records = tf.data.TFRecordDataset(files, compression_type="GZIP")
        out[split] = sorted(
            hashlib.sha256(
                tf.train.Example.FromString(r.numpy()).SerializeToString(deterministic=True)
            ).hexdigest()
            for r in records
        )
    return out


def _statistics(stats_uri: str) -> dict:
    """{split: DatasetFeatureStatistics as a dict}, features sorted by name."""
    from google.protobuf.json_format import MessageToDict

    out = {}
    for split in ("train", "eval", "test"):
        stats = tfdv.load_stats_binary(os.path.join(stats_uri, f"Split-{split}", "FeatureStats.pb"))
        dataset = stats.datasets[0]
        features = sorted(dataset.features, key=lambda f: f.path.step[0] if f.path.step else f.name)
        out[split] = {"num_examples": dataset.num_examples, "features": [MessageToDict(f) for f in features]}
    return out


def assert_same(ours, theirs, where: str = "") -> None:
    """Asserts `ours` equals `theirs` field by field; floats to 1e-12 relative, because sums of
    floats depend on the order bundles are combined in (two in-process runs differ there too)."""
    if isinstance(theirs, float) and isinstance(ours, (int, float)):
        assert math.isclose(ours, theirs, rel_tol=1e-12, abs_tol=1e-15), f"{where}: {ours} != {theirs}"
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and ours.keys() == theirs.keys(), f"{where}: keys differ"
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{where}/{key}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), f"{where}: lengths differ"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"


def test_assert_same_tolerates_only_summation_order():
    assert_same({"mean": [1.0 + 1e-15, 2]}, {"mean": [1.0, 2]})
    for ours in ({"mean": [1.0 + 1e-9, 2]}, {"mean": [1.0, 3]}, {"mean": [1.0]}, {"avg": [1.0, 2]}):
        with pytest.raises(AssertionError):
            assert_same(ours, {"mean": [1.0, 2]})


def _evaluate(base, examples_uri: str, model, beam_args) -> dict:
    """The evaluator's execution properties for `model` on `examples_uri` under `beam_args`."""
    from components.evaluator import executor
    from pipeline.config import EvaluatorConfig

    ctx = step_context(
        "evaluator",
        {"examples": Artifact(examples_uri, "Examples", {}, 1), "model": model},
        {
            "evaluation": os.path.join(str(base), "evaluation"),
            "blessing": os.path.join(str(base), "blessing"),
        },
        params=EvaluatorConfig(accuracy_floor=0.0, slice_accuracy_floor=0.0),
        beam_args=beam_args,
    )
    return executor.run(ctx).execution_properties


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("engine_model") / "model")
    digest = model_fixtures.build_model(uri, steps=30)
    return Artifact(uri=uri, type_name="Model", properties={"digest": digest}, id=7)


@pytest.mark.parametrize("engine", ["portable", "flink", "spark"])
def test_every_engine_gives_the_in_process_results(
    engine, request, tmp_path, engine_data, reference_run, tiny_model
):
    beam_args = _engine_args(engine, request)
    runner = beam_engines.runner_name(beam_args)
    run = _data_half(tmp_path / "data", engine_data, beam_args)
    for step in ("example_gen", "statistics_gen"):
        assert run["steps"][step]["state"] == "ran"
        assert run["steps"][step]["properties"]["beam_runner"] == runner
        assert reference_run["steps"][step]["properties"]["beam_runner"] == "FnApiRunner"

    ours, theirs = (r["steps"]["example_gen"] for r in (run, reference_run))
    assert ours["properties"]["split_counts"] == theirs["properties"]["split_counts"]
    assert _records_by_split(ours["outputs"]["examples"]) == _records_by_split(theirs["outputs"]["examples"])
    assert_same(
        _statistics(run["steps"]["statistics_gen"]["outputs"]["statistics"]),
        _statistics(reference_run["steps"]["statistics_gen"]["outputs"]["statistics"]),
        "statistics",
    )

    examples = ours["outputs"]["examples"]
    on_engine = _evaluate(tmp_path / "eval_engine", examples, tiny_model, beam_args)
    in_process = _evaluate(tmp_path / "eval_in_process", examples, tiny_model, [])
    assert on_engine["beam_runner"] == runner and in_process["beam_runner"] == "FnApiRunner"
    for key in ("metrics", "blessed", "reasons", "checks", "examples_evaluated"):
        assert_same(on_engine[key], in_process[key], key)
    assert np.isfinite(on_engine["metrics"]["candidate"]["overall"]["accuracy"])
