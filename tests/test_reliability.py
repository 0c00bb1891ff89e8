"""The reliability promises (README "Reliability"), proven where the per-component tests do not
already prove them:

- paths: URI schemes in a config file, `..` and symlink escapes, unsafe step/output names (14);
- the push: a failure or a SIGKILL at every file of a real SavedModel, after the copy and right
  after the rename, never leaves an incomplete numbered version (4, 5); concurrent publishers get
  distinct consecutive versions (6); a model promoted mid-run is not overwritten (7); a pipeline
  run or a rollback SIGKILLed between the serving rename and its record is recovered by the next
  one, not published twice, and a version whose files do not match is never adopted (8, 15);
- the runner: a run SIGKILLed inside each step, or between renaming a step's output and
  recording it, resumes to a clean run's outputs (8); a code or library change invalidates the
  cache (9);
- models are programs: no pickle-style loading anywhere, and rollback refuses a version whose
  files no longer match the digest recorded for its model (12, 15);
- the data gate stops a span of images that are not digits at all, and wrongly typed label and
  image values (10);
- whole-pipeline faults, with the run summary saying what happened: a step that raises, NaN
  training, a tampered baseline model, an evaluation without thresholds (1, 3, 12). These share
  one pipeline root and run in file order (each also runs alone).
"""

import ast
import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import model_fixtures
import numpy as np
import pytest
from mnist_slices import TEST_IMAGES, TRAIN_IMAGES, write_idx, write_mnist_slice
from step_context import step_context

from pipeline.cli import main
from pipeline.config import PusherConfig, load_config
from pipeline.core import artifacts, fingerprint
from pipeline.core.digest import directory_digest
from pipeline.core.errors import ConfigError, ModelIntegrityError, PushError
from pipeline.core.pipeline import Pipeline
from pipeline.core.runner import run_pipeline
from pipeline.core.step import Artifact, InputSpec, StepContext, StepOutcome, StepSpec
from pipeline.formats import examples as examples_format
from pipeline.formats.model import SERVING_SUBDIR

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(PROJECT, "tests")


def child_env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([PROJECT, TESTS]), TF_CPP_MIN_LOG_LEVEL="2")


def numbered(serving_dir) -> list:
    """Version folders as a server sees them (integer names), ascending."""
    if not os.path.isdir(serving_dir):
        return []
    return sorted((n for n in os.listdir(serving_dir) if n.isdigit()), key=int)


def staging(serving_dir) -> list:
    return (
        sorted(n for n in os.listdir(serving_dir) if n.startswith(".staging-"))
        if os.path.isdir(serving_dir)
        else []
    )


# =============================================================================================
# 14. Every path stays under its root; URI schemes, `..` and links out are refused
# =============================================================================================

PATH_KEYS = [
    ("pipeline_root", 'pipeline_root = "{v}"\n'),
    ("data.data_root", '[data]\ndata_root = "{v}"\n'),
    ("pusher.serving_dir", '[pusher]\nserving_dir = "{v}"\n'),
    ("validation.schema_path", '[validation]\nschema_path = "{v}"\n'),
]


@pytest.mark.parametrize("key,template", PATH_KEYS, ids=[k for k, _ in PATH_KEYS])
@pytest.mark.parametrize(
    "uri", ["gs://bucket/mnist", "s3://bucket/mnist", "file:///tmp/mnist", "hdfs://namenode/mnist"]
)
def test_config_file_refuses_uri_schemes_naming_the_key(tmp_path, key, template, uri):
    path = tmp_path / "c.toml"
    path.write_text(template.format(v=uri))
    with pytest.raises(
        ConfigError,
        match=rf"^config key {key}: only local paths are supported, "
        rf"got '{uri}'$",
    ):
        load_config(str(path))


@pytest.mark.parametrize("key,template", PATH_KEYS, ids=[k for k, _ in PATH_KEYS])
def test_overrides_refuse_uri_schemes_too(key, template):
    section, _, name = key.rpartition(".")
    overrides = {section: {name: "gs://bucket/x"}} if section else {name: "gs://bucket/x"}
    with pytest.raises(ConfigError, match=rf"config key {key}: only local paths"):
        load_config(None, overrides)


def test_cli_with_a_uri_in_the_config_file_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text('pipeline_root = "gs://bucket/root"\n')
    assert main(["--config", str(config)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: config key pipeline_root: only local paths are supported, got 'gs://bucket/root'"
    ]
    # Before the check, "gs://bucket/root" was used as the relative path gs:/bucket/root.
    assert sorted(os.listdir(tmp_path)) == ["c.toml"]


def test_local_paths_in_a_config_file_are_accepted(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f'pipeline_root = "{tmp_path}/root"\n[pusher]\nserving_dir = "{tmp_path}/srv"\n')
    config = load_config(str(path))
    assert config.serving_dir == f"{tmp_path}/srv"


def test_contained_refuses_dotdot_absolute_and_sibling_prefix_escapes(tmp_path):
    root = tmp_path / "root"
    (root / "step" / "out").mkdir(parents=True)
    (tmp_path / "root-evil").mkdir()
    inside = str(root / "step" / "out")
    assert artifacts.contained(inside, str(root)) == inside
    assert artifacts.contained(str(root / "step" / ".." / "step" / "out"), str(root))
    for escape in (
        str(root / "step" / ".." / ".." / "outside"),
        str(root / ".."),
        "/etc/passwd",
        str(tmp_path / "root-evil" / "x"),
    ):
        with pytest.raises(ConfigError, match="escapes its root"):
            artifacts.contained(escape, str(root))


def test_contained_follows_symbolic_links(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "inner").mkdir()
    os.symlink(outside, root / "link_out")
    os.symlink(root / "inner", root / "link_in")
    with pytest.raises(ConfigError, match="escapes its root"):
        artifacts.contained(str(root / "link_out" / "x"), str(root))
    assert artifacts.contained(str(root / "link_in" / "x"), str(root))


@pytest.mark.parametrize(
    "step,output",
    [
        ("..", "out"),
        ("../../evil", "out"),
        ("/etc", "out"),
        ("a/b", "out"),
        ("Upper", "out"),
        ("", "out"),
        (".hidden", "out"),
        ("step", ".."),
        ("step", "../x"),
        ("step", "x y"),
        ("step", "out/../../.."),
        ("step", "ünicode"),
    ],
)
def test_staging_dir_refuses_unsafe_step_or_output_names(tmp_path, step, output):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ConfigError, match="unsafe step or output name"):
        artifacts.staging_dir(str(root), step, output, 7)
    with pytest.raises(ConfigError, match="unsafe step or output name"):
        artifacts.final_dir(str(root), step, output, 7)
    assert os.listdir(tmp_path) == ["root"] and os.listdir(root) == []


def test_staging_dir_refuses_a_step_folder_linked_outside_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "statistics_gen")
    with pytest.raises(ConfigError, match="escapes its root"):
        artifacts.staging_dir(str(root), "statistics_gen", "statistics", 3)
    assert os.listdir(outside) == []


def _write_marker(ctx):
    for path in ctx.outputs.values():
        with open(os.path.join(path, "marker.txt"), "w") as f:
            f.write("x")
    return StepOutcome()


def test_a_run_whose_step_folder_links_outside_writes_nothing_there(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "statistics_gen")
    pipeline = Pipeline(
        root=str(root),
        lock_timeout_s=1.0,
        steps=(
            StepSpec("example_gen", {}, {"examples": "Examples"}, _write_marker, {}),
            StepSpec(
                "statistics_gen",
                {"examples": InputSpec(producer="example_gen.examples")},
                {"statistics": "ExampleStatistics"},
                _write_marker,
                {},
            ),
        ),
    )
    result = run_pipeline(pipeline)
    assert result.exit_code == 2
    assert result.summary["steps"]["example_gen"]["state"] == "ran"
    assert result.summary["steps"]["statistics_gen"]["state"] == "failed"
    assert "escapes its root" in result.summary["message"]
    assert os.listdir(outside) == []


# =============================================================================================
# 4, 5, 6. The push: atomic at every file, nothing left on failure, one version per publisher
# =============================================================================================


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """(Format-Serving dir, digest, its files) of a real small SavedModel."""
    uri = str(tmp_path_factory.mktemp("reliability_model") / "model")
    digest = model_fixtures.build_model(uri, n_train=300, steps=5)
    model_dir = os.path.join(uri, SERVING_SUBDIR)
    files = sorted(
        os.path.relpath(os.path.join(d, n), model_dir) for d, _, names in os.walk(model_dir) for n in names
    )
    return {"uri": uri, "dir": model_dir, "digest": digest, "files": files}


def test_push_failing_at_each_file_leaves_no_version_and_no_staging(tmp_path, saved_model, monkeypatch):
    from components.pusher import publish

    files = saved_model["files"]
    assert len(files) >= 3, files  # saved_model.pb, variables index and data at least
    real_copy = shutil.copy2
    serving = str(tmp_path / "serving")
    for k in range(1, len(files) + 1):
        calls = []

        def copy2(src, dst, *args, calls=calls, k=k, **kwargs):
            calls.append(src)
            # Whatever the push has done so far, no server may see a version folder yet.
            assert numbered(serving) == []
            if len(calls) == k:
                with open(dst, "wb") as f:
                    f.write(b"half a file")
                raise OSError(errno.EIO, os.strerror(errno.EIO), dst)
            return real_copy(src, dst, *args, **kwargs)

        monkeypatch.setattr(shutil, "copy2", copy2)
        with pytest.raises(PushError, match=r"failed at 'copy .*Input/output error"):
            publish.publish(saved_model["dir"], serving, saved_model["digest"], None)
        assert len(calls) == k, f"file {k} was never copied"
        assert numbered(serving) == [] and staging(serving) == [], f"failure at file {k}"
    monkeypatch.setattr(shutil, "copy2", real_copy)
    assert publish.publish(saved_model["dir"], serving, saved_model["digest"], None) == 1
    assert directory_digest(os.path.join(serving, "1")) == saved_model["digest"]


KILLED_PUBLISH = textwrap.dedent("""
    import os, shutil, signal, sys
    from components.pusher import publish

    model_dir, serving_dir, digest, point = sys.argv[1:5]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    real_copy, real_rename, copies = shutil.copy2, os.rename, [0]

    def copy2(src, dst, *args, **kwargs):
        copies[0] += 1
        if point == "copy%d" % copies[0]:
            with open(dst, "wb") as f:
                f.write(b"half a file")
            die()
        return real_copy(src, dst, *args, **kwargs)

    def rename(src, dst):
        real_rename(src, dst)
        if point == "after_rename":
            die()

    shutil.copy2, os.rename = copy2, rename
    publish.publish(model_dir, serving_dir, digest, (lambda staged: die()) if point == "verify" else None)
    print("survived", point)
""")


def test_push_killed_at_each_file_never_shows_an_incomplete_version(tmp_path, saved_model):
    from components.pusher import publish

    digest = saved_model["digest"]
    template = str(tmp_path / "template")
    assert publish.publish(saved_model["dir"], template, digest, None) == 1
    points = [f"copy{k}" for k in range(1, len(saved_model["files"]) + 1)] + ["verify", "after_rename"]
    for point in points:
        serving = str(tmp_path / point)
        shutil.copytree(template, serving)
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_PUBLISH, saved_model["dir"], serving, digest, point],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert killed.returncode == -signal.SIGKILL, (point, killed.stdout, killed.stderr[-2000:])
        # Every version a server can see is complete and exactly the model.
        for version in numbered(serving):
            assert directory_digest(os.path.join(serving, version)) == digest, (point, version)
        if point == "after_rename":
            assert numbered(serving) == ["1", "2"]
        else:
            assert numbered(serving) == ["1"]
            assert len(staging(serving)) == 1  # the debris is hidden and not a version
        # The next push clears the debris and takes the next number.
        next_version = publish.publish(saved_model["dir"], serving, digest, None)
        assert next_version == int(numbered(serving)[-2]) + 1 == len(numbered(serving))
        assert staging(serving) == []


CONCURRENT_PUBLISH = textwrap.dedent("""
    import os, sys, time
    from components.pusher import publish

    model_dir, serving_dir, digest, go = sys.argv[1:5]
    while not os.path.exists(go):
        time.sleep(0.005)
    print(publish.publish(model_dir, serving_dir, digest, None))
""")


def test_concurrent_publishers_get_distinct_consecutive_versions(tmp_path, saved_model):
    serving, go = str(tmp_path / "serving"), str(tmp_path / "go")
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CONCURRENT_PUBLISH,
                saved_model["dir"],
                serving,
                saved_model["digest"],
                go,
            ],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    open(go, "w").close()
    outputs = [child.communicate(timeout=120) for child in children]
    assert [c.returncode for c in children] == [0] * 4, [err[-2000:] for _, err in outputs]
    assert sorted(int(out.strip()) for out, _ in outputs) == [1, 2, 3, 4]
    assert numbered(serving) == ["1", "2", "3", "4"] and staging(serving) == []
    for version in numbered(serving):
        assert directory_digest(os.path.join(serving, version)) == saved_model["digest"]


# =============================================================================================
# 8, 15. A push or rollback killed between the serving rename and its record is recovered
# =============================================================================================

# The child runs the CLI and SIGKILLs itself right after a version folder of the serving folder
# got its final name: the version is complete, its metadata record not yet written.
KILLED_AFTER_SERVING_RENAME = textwrap.dedent("""
    import os, signal, sys
    from pipeline.cli import main

    serving_dir, argv = os.path.realpath(sys.argv[1]), sys.argv[2:]
    real_rename = os.rename

    def rename(src, dst):
        real_rename(src, dst)
        if os.path.dirname(os.path.realpath(dst)) == serving_dir and os.path.basename(dst).isdigit():
            os.kill(os.getpid(), signal.SIGKILL)

    os.rename = rename
    main(argv)
    print("survived")
""")


def run_killed_after_serving_rename(serving_dir: str, *argv: str) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_SERVING_RENAME, serving_dir, *argv],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, (killed.stdout[-2000:], killed.stderr[-3000:])


def test_a_run_killed_between_the_serving_rename_and_its_record_is_recovered_not_pushed_again(tmp_path):
    """Whole pipeline: the push is SIGKILLed right after version 1 appears; the next run
    publishes nothing, says so, and records version 1; the run after it sees the model serving."""
    from pipeline.core.metadata import open_store
    from pipeline.formats import pushed_model as pushed_format
    from pipeline.predict import resolve_served_model

    data = write_mnist_slice(str(tmp_path / "data"), 1000, 200)
    root, serving = str(tmp_path / "root"), str(tmp_path / "root" / "serving")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(FAULT_CONFIG))

    def args(n):
        return [
            "--config",
            str(config),
            "--data-root",
            data,
            "--pipeline-root",
            root,
            "--summary-json",
            str(tmp_path / f"summary{n}.json"),
        ]

    run_killed_after_serving_rename(serving, *args(1))
    assert numbered(serving) == ["1"]
    assert pushed_format.latest_push(open_store(root), serving) is None  # the record never came
    # Until it is recorded, the version is not trusted.
    with pytest.raises(ModelIntegrityError, match="no push record"):
        resolve_served_model(serving, root)

    assert main(args(2)) == 0
    summary = json.loads((tmp_path / "summary2.json").read_text())
    assert summary["push"] == {
        "pushed": 1,
        "version": 1,
        "reason": "already serving (version 1, recovered from an interrupted push)",
    }
    assert step_states(summary) == {
        **{
            s: "cached"
            for s in (
                "example_gen",
                "statistics_gen",
                "schema_gen",
                "example_validator",
                "trainer",
                "evaluator",
            )
        },
        "pusher": "ran",
    }
    assert numbered(serving) == ["1"] and staging(serving) == []
    store = open_store(root)
    model_uri = summary["steps"]["trainer"]["outputs"]["model"]
    recorded = pushed_format.find_push(store, serving, 1)
    assert store.artifact(pushed_format.pushed_model_id(recorded.properties)).uri == model_uri
    served = resolve_served_model(serving, root)
    assert served.verified and served.version == 1

    # The next run's baseline resolution sees the model serving: it is the candidate itself.
    assert main(args(3)) == 0
    summary = json.loads((tmp_path / "summary3.json").read_text())
    assert summary["push"]["pushed"] == 0 and summary["push"]["reason"].endswith(
        "is already serving; nothing to push"
    )
    assert step_states(summary)["evaluator"] == "cached"
    assert numbered(serving) == ["1"]


def _two_recorded_versions(tmp_path, saved_model):
    """A pipeline root whose serving folder holds versions 1 and 2 of two recorded models."""
    from components.pusher import publish
    from pipeline.core.metadata import open_store

    root, serving = str(tmp_path / "root"), str(tmp_path / "serving")
    store = open_store(root)
    model_ids = []
    for version in (1, 2):
        uri = str(tmp_path / f"model{version}")
        model_fixtures.copy_model(saved_model["uri"], uri)
        model_ids.append(_record_model(store, uri, saved_model["digest"]))
        assert publish.publish(saved_model["dir"], serving, saved_model["digest"], None) == version
        _record_push(store, model_ids[-1], version, serving)
    return root, serving, model_ids


def test_a_rollback_killed_between_the_serving_rename_and_its_record_is_recovered_not_repeated(
    tmp_path, saved_model
):
    from pipeline import operations, resolvers
    from pipeline.core.metadata import open_store
    from pipeline.formats import pushed_model as pushed_format

    root, serving, model_ids = _two_recorded_versions(tmp_path, saved_model)
    run_killed_after_serving_rename(serving, "rollback", "--pipeline-root", root, "--serving-dir", serving)
    assert numbered(serving) == ["1", "2", "3"]
    assert pushed_format.find_push(open_store(root), serving, 3) is None

    config = load_config(None, {"pipeline_root": root, "pusher": {"serving_dir": serving}})
    assert operations.rollback(config) == (3, 1)  # the same command again: recorded, not repeated
    assert numbered(serving) == ["1", "2", "3"]
    store = open_store(root)
    assert resolvers.latest_pushed_model(store, serving).id == model_ids[0]
    status = operations.serving_status(config)
    assert status["serving"]["version"] == 3 and status["serving"]["rolled_back_from"] == 1
    # Recorded once: a further rollback goes on from there.
    assert operations.rollback(config, to_version=2) == (4, 2)
    assert resolvers.latest_pushed_model(open_store(root), serving).id == model_ids[1]


def test_an_unrecorded_version_whose_files_changed_is_never_adopted(tmp_path, saved_model):
    """The version record of a killed push names a model, but the version's files are no
    longer that model's: neither the pusher nor rollback records it, predict refuses it."""
    from components.pusher import executor, publish
    from pipeline import operations
    from pipeline.core.metadata import open_store, to_step_artifact
    from pipeline.formats import pushed_model as pushed_format
    from pipeline.predict import resolve_served_model

    root, serving, model_ids = _two_recorded_versions(tmp_path, saved_model)
    store = open_store(root)
    candidate = to_step_artifact(store.artifact(model_ids[1]))
    record = pushed_format.version_record(root, "killed", candidate.id, candidate.uri, saved_model["digest"])
    assert publish.publish(saved_model["dir"], serving, saved_model["digest"], None, record=record) == 3
    flip_byte(os.path.join(serving, "3"))

    config = load_config(None, {"pipeline_root": root, "pusher": {"serving_dir": serving}})
    assert operations.recover_interrupted_publish(store, config) is None
    assert pushed_format.find_push(store, serving, 3) is None
    with pytest.raises(ModelIntegrityError, match="does not match|no push record"):
        resolve_served_model(serving, root)

    # The pusher does not adopt it either: it publishes a verified copy as the next version.
    blessing = _blessing(str(tmp_path / "blessing"), saved_model["digest"], model_ids[0])
    ctx = _pusher_ctx(
        tmp_path,
        candidate,
        blessing,
        model_fixtures.write_examples(str(tmp_path / "ex"), 4),
        serving,
        to_step_artifact(store.artifact(model_ids[0])),
    )
    ctx = dataclasses.replace(ctx, pipeline_root=root)
    outcome = executor.run(ctx)
    assert outcome.execution_properties["version"] == 4
    assert outcome.execution_properties["reason"] == f"published as version 4 in {serving}"
    assert directory_digest(os.path.join(serving, "4")) == saved_model["digest"]


# =============================================================================================
# 1, 7. The pusher refuses without a blessing marker, and when the serving model changed
# =============================================================================================


def _record_model(store, uri: str, digest: str) -> int:
    contexts = store.run_contexts("setup", {})
    execution = store.start_execution("trainer", "setup", "", contexts, {})
    return store.complete_execution(execution, {"model": ("Model", uri, {"digest": digest})}, {}, contexts)[
        "model"
    ]


def _record_push(store, model_id: int, version: int, serving_dir: str) -> int:
    contexts = store.run_contexts("setup", {})
    execution = store.start_execution("pusher", "setup", "", contexts, {})
    properties = {"pushed": 1, "version": version, "model_id": model_id, "serving_dir": serving_dir}
    return store.complete_execution(
        execution,
        {"pushed_model": ("PushedModel", os.path.join(serving_dir, str(version)), properties)},
        {},
        contexts,
    )["pushed_model"]


def _blessing(path: str, digest: str, baseline_id: int, marker: bool = True) -> Artifact:
    from pipeline.formats.blessing import BLESSED_FILE, BlessingRecord, write_blessing

    os.makedirs(path)
    write_blessing(
        path,
        BlessingRecord(
            blessed=True,
            reasons=[],
            checks=[],
            candidate_model={"digest": digest},
            baseline_model={"id": baseline_id} if baseline_id else None,
            policy="superiority" if baseline_id else None,
            comparisons=[{"slice": "overall"}] if baseline_id else [],
        ),
    )
    if not marker:
        os.remove(os.path.join(path, BLESSED_FILE))
    return Artifact(path, "ModelBlessing", {"blessed": 1, "baseline_model_id": baseline_id}, 900)


def _pusher_ctx(
    tmp_path, model: Artifact, blessing: Artifact, examples: str, serving: str, baseline=None
) -> StepContext:
    inputs = {
        "model": model,
        "blessing": blessing,
        "examples": Artifact(examples, "Examples", {}, 1),
        "baseline_model": baseline,
    }
    return step_context(
        "pusher",
        inputs,
        {"pushed_model": str(tmp_path / f"pushed_model_{len(os.listdir(tmp_path))}")},
        params=PusherConfig(serving_dir=serving, verify_examples=4),
    )


@pytest.fixture(scope="module")
def examples_uri(tmp_path_factory):
    return model_fixtures.write_examples(str(tmp_path_factory.mktemp("reliability_examples")), 8)


def test_a_blessing_folder_without_its_marker_pushes_nothing(tmp_path, saved_model, examples_uri):
    from components.pusher import executor

    serving = str(tmp_path / "serving")
    model = Artifact(saved_model["uri"], "Model", {"digest": saved_model["digest"]}, 20)
    # The properties say blessed, decision.json names this model, but no BLESSED file exists.
    blessing = _blessing(str(tmp_path / "blessing"), saved_model["digest"], 0, marker=False)
    outcome = executor.run(_pusher_ctx(tmp_path, model, blessing, examples_uri, serving))
    assert outcome.execution_properties["pushed"] == 0
    assert outcome.execution_properties["reason"].startswith("model not blessed (no BLESSED marker")
    assert numbered(serving) == []


def test_a_model_promoted_mid_run_is_not_overwritten(tmp_path, saved_model, examples_uri):
    """Resolvers over a real metadata store: the evaluator compared against the model serving at
    evaluation time; another model is promoted before the pusher runs; the pusher refuses."""
    from components.pusher import executor, publish
    from pipeline import resolvers
    from pipeline.core.metadata import open_store, to_step_artifact

    root, serving = str(tmp_path / "root"), str(tmp_path / "serving")
    store = open_store(root)
    copies = {}
    for name in ("serving_a", "other_b", "candidate"):
        copies[name] = str(tmp_path / name)
        model_fixtures.copy_model(saved_model["uri"], copies[name])
    model_a = _record_model(store, copies["serving_a"], saved_model["digest"])
    publish.publish(saved_model["dir"], serving, saved_model["digest"], None)
    _record_push(store, model_a, 1, serving)
    candidate = to_step_artifact(
        store.artifact(_record_model(store, copies["candidate"], saved_model["digest"]))
    )

    # Evaluation time: the baseline is model A, and the blessing records that.
    baseline = resolvers.serving_model_unless("model", serving)(store, {"model": candidate})
    assert baseline.id == model_a
    blessing = _blessing(str(tmp_path / "blessing"), saved_model["digest"], baseline.id)

    # Without a promotion in between, this blessing would push (control).
    at_push = resolvers.latest_pushed_model(store, serving)
    ctx = _pusher_ctx(tmp_path, candidate, blessing, examples_uri, str(tmp_path / "control_serving"), at_push)
    assert executor.run(ctx).execution_properties["pushed"] == 1

    # Mid-run, model B is promoted (another writer, a rollback); the pusher resolves it afresh.
    model_b = _record_model(store, copies["other_b"], saved_model["digest"])
    publish.publish(saved_model["dir"], serving, saved_model["digest"], None)
    _record_push(store, model_b, 2, serving)
    at_push = resolvers.latest_pushed_model(store, serving)
    assert at_push.id == model_b
    outcome = executor.run(_pusher_ctx(tmp_path, candidate, blessing, examples_uri, serving, at_push))
    assert outcome.execution_properties["pushed"] == 0
    assert outcome.execution_properties["reason"] == (
        f"baseline changed since evaluation: blessed against model id {model_a}, "
        f"latest pushed model is now id {model_b}; not pushing"
    )
    assert numbered(serving) == ["1", "2"]


# =============================================================================================
# 8, 9. The runner: a SIGKILL anywhere in a step, code and library changes
# =============================================================================================


def _numbers(ctx):
    with open(os.path.join(ctx.outputs["numbers"], "numbers.txt"), "w") as f:
        f.write("1 2 3\n")
    _maybe_die(ctx, "numbers")
    with open(os.path.join(ctx.outputs["numbers"], "more.txt"), "w") as f:
        f.write("4 5\n")
    return StepOutcome(output_properties={"numbers": {"count": 5}})


def _total(ctx):
    uri = ctx.inputs["numbers"].uri
    values = [
        int(x) for name in ("numbers.txt", "more.txt") for x in open(os.path.join(uri, name)).read().split()
    ]
    with open(os.path.join(ctx.outputs["total"], "total.txt"), "w") as f:
        f.write(str(sum(values)))
    _maybe_die(ctx, "total")
    return StepOutcome(execution_properties={"total": sum(values)})


def _report(ctx):
    total = open(os.path.join(ctx.inputs["total"].uri, "total.txt")).read()
    with open(os.path.join(ctx.outputs["report"], "report.txt"), "w") as f:
        f.write(f"total {total}\n")
    _maybe_die(ctx, "report")
    return StepOutcome()


def _maybe_die(ctx, output: str) -> None:
    if os.environ.get("RELIABILITY_KILL") == f"{output}:mid_write":
        os.kill(os.getpid(), signal.SIGKILL)


def small_pipeline(root: str, code_modules=()) -> Pipeline:
    """Three fake steps in a chain: numbers -> total -> report."""
    return Pipeline(
        root=root,
        lock_timeout_s=5.0,
        steps=(
            StepSpec("example_gen", {}, {"numbers": "Numbers"}, _numbers, {}, code_modules),
            StepSpec(
                "statistics_gen",
                {"numbers": InputSpec(producer="example_gen.numbers")},
                {"total": "Total"},
                _total,
                {},
            ),
            StepSpec(
                "example_validator",
                {"total": InputSpec(producer="statistics_gen.total")},
                {"report": "Report"},
                _report,
                {},
            ),
        ),
    )


def run_killable(root: str) -> None:
    """Entry point of the killed child: RELIABILITY_KILL=<output>:<mid_write|before_record>."""
    from pipeline.core.metadata import MetadataStore

    output, _, point = os.environ["RELIABILITY_KILL"].partition(":")
    if point == "before_record":
        real_complete = MetadataStore.complete_execution

        def complete_execution(self, execution_id, outputs, *args, **kwargs):
            if output in outputs:  # the output folder is already renamed to its final name
                os.kill(os.getpid(), signal.SIGKILL)
            return real_complete(self, execution_id, outputs, *args, **kwargs)

        MetadataStore.complete_execution = complete_execution
    run_pipeline(small_pipeline(root))


def output_contents(summary: dict) -> dict:
    return {
        name: {key: directory_digest(uri) for key, uri in step["outputs"].items()}
        for name, step in summary["steps"].items()
    }


@pytest.mark.parametrize("output", ["numbers", "total", "report"])
@pytest.mark.parametrize("point", ["mid_write", "before_record"])
def test_run_killed_in_or_after_each_step_resumes_to_a_clean_runs_outputs(tmp_path, output, point):
    from pipeline.core.metadata import FAILED, open_store

    clean = run_pipeline(small_pipeline(str(tmp_path / "clean")))
    root = str(tmp_path / "root")
    killed = subprocess.run(
        [sys.executable, "-c", f"import test_reliability as t; t.run_killable({root!r})"],
        env={**child_env(), "RELIABILITY_KILL": f"{output}:{point}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if point == "before_record":
        # The output had reached its final name when the process died, unrecorded.
        [step_dir] = [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, output))]
        assert [n for n in os.listdir(os.path.join(root, step_dir, output)) if n.isdigit()]

    resumed = run_pipeline(small_pipeline(root))
    assert resumed.exit_code == 0
    assert output_contents(resumed.summary) == output_contents(clean.summary)
    states = {name: step["state"] for name, step in resumed.summary["steps"].items()}
    order = ["numbers", "total", "report"]
    names = ["example_gen", "statistics_gen", "example_validator"]
    assert [states[n] for n in names] == ["cached"] * order.index(output) + ["ran"] * (
        3 - order.index(output)
    )
    # Nothing the killed process wrote is left or trusted: its execution is FAILED, no staging
    # folder remains, and the only folders are those of recorded, verifying artifacts.
    store = open_store(root)
    killed_executions = [e for e in store.store.get_executions() if e.last_known_state == FAILED]
    assert len(killed_executions) == 1 and not store.outputs_of(killed_executions[0].id)
    recorded = {
        a.uri: a.properties["content_digest"]
        for t in ("Numbers", "Total", "Report")
        for a in store.artifacts_of_type(t)
    }
    on_disk = {
        os.path.join(root, step, out, n)
        for step in names
        if os.path.isdir(os.path.join(root, step))
        for out in os.listdir(os.path.join(root, step))
        for n in os.listdir(os.path.join(root, step, out))
    }
    assert on_disk == set(recorded)
    assert {uri: directory_digest(uri) for uri in recorded} == recorded


def test_changed_step_code_or_library_versions_invalidate_the_cache(tmp_path, monkeypatch):
    module = tmp_path / "code" / "reliability_fake_step.py"
    module.parent.mkdir()
    module.write_text("VERSION = 1\n")
    monkeypatch.syspath_prepend(str(module.parent))
    root = str(tmp_path / "root")

    def states():
        fingerprint.code_fingerprint.cache_clear()
        result = run_pipeline(small_pipeline(root, code_modules=("reliability_fake_step",)))
        assert result.exit_code == 0
        return [
            result.summary["steps"][n]["state"]
            for n in ("example_gen", "statistics_gen", "example_validator")
        ]

    assert states() == ["ran", "ran", "ran"]
    assert states() == ["cached", "cached", "cached"]
    module.write_text("VERSION = 2  # the step's code changed\n")
    # The step reruns; its output is byte-identical, so its dependants stay cached.
    assert states() == ["ran", "cached", "cached"]
    assert states() == ["cached", "cached", "cached"]
    real_versions = fingerprint.stack_versions()
    monkeypatch.setattr(
        fingerprint,
        "stack_versions",
        lambda: tuple((n, "99.0" if n == "numpy" else v) for n, v in real_versions),
    )
    assert states() == ["ran", "ran", "ran"]


# =============================================================================================
# 12, 15. Models are programs: no pickle-style loading; rollback verifies what it re-publishes
# =============================================================================================

_UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
_UNSAFE_CALLS = {"load_model", "Lambda", "model_from_json", "model_from_yaml", "eval", "exec"}


def test_no_module_deserialises_with_pickle_or_keras_lambda():
    offenders = []
    for top in ("pipeline", "components"):
        for dirpath, _, names in os.walk(os.path.join(PROJECT, top)):
            for name in (n for n in names if n.endswith(".py")):
                path = os.path.join(dirpath, name)
                tree = ast.parse(open(path).read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        offenders += [
                            (path, a.name) for a in node.names if a.name.split(".")[0] in _UNSAFE_MODULES
                        ]
                    elif (
                        isinstance(node, ast.ImportFrom)
                        and (node.module or "").split(".")[0] in _UNSAFE_MODULES
                    ):
                        offenders.append((path, node.module))
                    elif isinstance(node, ast.Call):
                        func = node.func
                        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                        if called in _UNSAFE_CALLS:
                            offenders.append((path, called))
                        offenders += [
                            (path, "allow_pickle=True")
                            for k in node.keywords
                            if k.arg == "allow_pickle"
                            and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                        ]
    assert offenders == []
    from components.evaluator import tfma_setup

    assert tfma_setup.MODEL_TYPE == "tf_generic"  # TFMA does not probe the model with a Keras load


def flip_byte(version_dir: str) -> None:
    """Flips one byte of the variables data file of a published version (undo: call again)."""
    variables = os.path.join(version_dir, "variables")
    data = sorted(n for n in os.listdir(variables) if n.startswith("variables.data"))[0]
    with open(os.path.join(variables, data), "r+b") as f:
        f.seek(8)
        byte = f.read(1)
        f.seek(8)
        f.write(bytes([byte[0] ^ 0xFF]))


def _must_not_load(staged):
    raise AssertionError(f"a model that failed its digest check was loaded: {staged}")


def test_rollback_refuses_a_version_whose_files_changed(tmp_path, saved_model):
    from components.pusher import publish
    from pipeline.operations import republish

    serving = str(tmp_path / "serving")
    for _ in range(2):
        publish.publish(saved_model["dir"], serving, saved_model["digest"], None)
    flip_byte(os.path.join(serving, "1"))
    with pytest.raises(
        ModelIntegrityError, match=r"^rollback: version 1 in .* has digest .*, not the recorded"
    ):
        republish(serving, to_version=1, verify_fn=_must_not_load, expected_digest=saved_model["digest"])
    assert numbered(serving) == ["1", "2"] and staging(serving) == []
    flip_byte(os.path.join(serving, "1"))
    assert republish(serving, to_version=1, verify_fn=None, expected_digest=saved_model["digest"]) == 3


def test_rollback_command_verifies_the_recorded_digest_and_records_the_rollback(tmp_path, saved_model):
    from components.pusher import publish
    from pipeline import operations, resolvers
    from pipeline.core.metadata import MetadataStore, open_store

    root, serving, model_ids = _two_recorded_versions(tmp_path, saved_model)
    config = load_config(None, {"pipeline_root": root, "pusher": {"serving_dir": serving}})

    flip_byte(os.path.join(serving, "1"))
    with pytest.raises(ModelIntegrityError, match="version 1 .*files changed after publishing"):
        operations.rollback(config)
    assert numbered(serving) == ["1", "2"] and staging(serving) == []
    flip_byte(os.path.join(serving, "1"))

    # A version this pipeline has no record of is never loaded.
    assert publish.publish(saved_model["dir"], serving, saved_model["digest"], None) == 3
    with pytest.raises(ModelIntegrityError, match="version 3 .*no push record"):
        operations.rollback(config, to_version=3)

    assert operations.rollback(config, to_version=1) == (4, 1)
    assert directory_digest(os.path.join(serving, "4")) == saved_model["digest"]
    # Recorded: the model serving now, for the next run's baseline, is the rolled-back one.
    assert resolvers.latest_pushed_model(open_store(root), serving).id == model_ids[0]
    status = operations.serving_status(config)
    assert status["serving"]["version"] == 4 and status["serving"]["rolled_back_from"] == 1
    # ... and in the store's backup: a later restore does not bring the old baseline back.
    shutil.copy(os.path.join(root, "metadata.sqlite.backup"), str(tmp_path / "restored.sqlite"))
    restored = MetadataStore(str(tmp_path / "restored.sqlite"))
    assert resolvers.latest_pushed_model(restored, serving).id == model_ids[0]


# =============================================================================================
# 10. The data gate stops a span whose images are not handwritten digits at all
# =============================================================================================


def test_a_span_of_non_digit_images_is_stopped_by_the_gate(tmp_path):
    """Valid IDX files and real labels, but images of uniform noise, then all blank: drift
    against the previous span's pixel histogram stops both before training."""
    data = tmp_path / "data"
    write_mnist_slice(str(data / "span-1"), 1000, 200)
    span2 = write_mnist_slice(str(data / "span-2"), 1000, 200, offset=1000)
    common = [
        "--data-root",
        str(data),
        "--pipeline-root",
        str(tmp_path / "root"),
        "--to",
        "example_validator",
    ]
    assert main(common + ["--span", "1", "--summary-json", str(tmp_path / "s1.json")]) == 0
    rng = np.random.default_rng(0)
    for kind, make in (
        ("noise", lambda n: rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)),
        ("blank", lambda n: np.zeros((n, 28, 28), np.uint8)),
    ):
        for name, count in ((TRAIN_IMAGES, 1000), (TEST_IMAGES, 200)):
            write_idx(os.path.join(span2, name), make(count))
        code = main(common + ["--summary-json", str(tmp_path / f"{kind}.json")])
        summary = json.loads((tmp_path / f"{kind}.json").read_text())
        assert code == 3, (kind, summary["message"])
        assert summary["data"]["spans"] == [2]
        assert summary["steps"]["example_gen"]["state"] == "ran"
        assert summary["steps"]["example_validator"]["state"] == "ran"
        assert summary["steps"]["trainer"]["state"] == "skipped"
        assert "train/image" in summary["message"]
        assert "jensen-shannon divergence" in summary["message"].lower()
        drift = summary["steps"]["example_validator"]["properties"]["drift"]
        assert drift["image_jensen_shannon_divergence"] > 0.05, (kind, drift)
        if kind == "noise":  # real labels: only the images drifted. (Blank images hash alike,
            # so whole digit classes land in the eval split and the train labels drift too.)
            assert drift["label_l_infinity"] < 0.05
    assert not os.path.exists(tmp_path / "root" / "trainer")


def _float_typed_split(dest: str, count: int, feature: str) -> None:
    """Writes `<dest>/Split-<feature>_as_float/`: real digits with `feature` stored as floats."""
    import tensorflow as tf
    from tiny_examples import real_split

    data = real_split(count, 500)
    split_dir = os.path.join(dest, f"Split-{feature}_as_float")
    os.makedirs(split_dir)
    with tf.io.TFRecordWriter(os.path.join(split_dir, "data_tfrecord-00000-of-00001.gz"), "GZIP") as w:
        for image, label in zip(data.images, data.labels):
            density = float(np.mean(image > 127))
            values = {"image": image, "label": [label]}
            feats = {
                name: (
                    tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(v, float)))
                    if name == feature
                    else tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(v, np.int64)))
                )
                for name, v in values.items()
            }
            feats["ink_density"] = tf.train.Feature(float_list=tf.train.FloatList(value=[density]))
            feats["ink_density_bucket"] = tf.train.Feature(
                int64_list=tf.train.Int64List(
                    value=[int(np.digitize(density, examples_format.DEFAULT_INK_DENSITY_EDGES))]
                )
            )
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


def test_label_and_image_of_the_wrong_type_stop_the_run(tmp_path):
    """The curated schema wants INT label and image: float-typed values are ERROR anomalies."""
    from tiny_examples import compute_statistics, curated_schema_artifact, real_split, write_examples_artifact

    from components.example_validator.executor import run as validate
    from components.schema_gen.executor import run as schema_gen
    from pipeline.config import ValidationConfig

    examples = str(tmp_path / "examples")
    for feature in ("label", "image"):
        _float_typed_split(examples, 120, feature)
    compute_statistics(examples, str(tmp_path / "statistics"))
    schema_gen(
        step_context(
            "schema_gen",
            {"curated_schema": curated_schema_artifact()},
            {"schema": str(tmp_path / "schema")},
            params=ValidationConfig(infer_schema_report=False),
        )
    )
    outcome = validate(
        step_context(
            "example_validator",
            {
                "statistics": Artifact(str(tmp_path / "statistics"), "ExampleStatistics"),
                # The leakage check reads a span's train and test digits: real ones, none shared.
                "examples": Artifact(
                    write_examples_artifact(
                        str(tmp_path / "leak_free"), {"train": real_split(100), "test": real_split(50, 500)}
                    ),
                    "Examples",
                ),
                "schema": Artifact(str(tmp_path / "schema"), "Schema"),
            },
            # Only the type check is under test: these splits have no train split to measure drift on.
            {"anomalies": str(tmp_path / "anomalies")},
            params=ValidationConfig(reference_check=False),
        )
    )
    assert outcome.stop_exit_code == 3 and outcome.stop_run.startswith("data validation failed: ")
    assert outcome.execution_properties["error_counts"] == {"image_as_float": 1, "label_as_float": 1}
    report = (tmp_path / "anomalies" / "report.txt").read_text()
    for feature in ("label", "image"):
        [line] = [ln for ln in report.splitlines() if f"split={feature}_as_float feature={feature} " in ln]
        assert line.startswith("  ERROR") and "anomaly=UNEXPECTED_DATA_TYPE" in line, line


# =============================================================================================
# Whole-pipeline faults, and what the run summary says about them (1, 3, 12)
# =============================================================================================

# A small network and a short budget keep each training to seconds; the gate is loose enough
# for such a model to pass, so that a refusal below has exactly the cause each test injects.
FAULT_CONFIG = {
    "trainer": {
        "train_steps": 100,
        "batch_size": 50,
        "eval_every_steps": 50,
        "early_stopping_evals": 0,
        "conv1_filters": 8,
        "conv2_filters": 16,
        "dense_units": 64,
    },
    "evaluator": {
        "accuracy_floor": 0.30,
        "promotion_policy": "non_inferiority",
        "non_inferiority_margin": 1.0,
        "slice_accuracy_floor": 0.0,
        "slice_max_regression": 1.0,
    },
}
NO_THRESHOLDS = {
    "evaluator": {
        "accuracy_floor": None,
        "min_gain": None,
        "slice_accuracy_floor": None,
        "slice_max_regression": None,
    }
}


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """One pipeline root shared, in order, by the fault tests below; span 1 = 1,000 digits."""
    base = tmp_path_factory.mktemp("faults")
    write_mnist_slice(str(base / "data" / "span-1"), 1000, 200)
    return {"base": base, "runs": 0}


def run_faults(faults, *overrides: dict) -> tuple:
    """Runs the CLI on the shared root with FAULT_CONFIG (+ overrides); (exit status, summary)."""
    config = json.loads(json.dumps(FAULT_CONFIG))
    for extra in overrides:
        for section, values in extra.items():
            config.setdefault(section, {}).update(values)
    faults["runs"] += 1
    base = faults["base"]
    config_path, summary_path = base / f"config{faults['runs']}.json", base / f"summary{faults['runs']}.json"
    config_path.write_text(json.dumps(config))
    code = main(
        [
            "--config",
            str(config_path),
            "--data-root",
            str(base / "data"),
            "--pipeline-root",
            str(base / "root"),
            "--summary-json",
            str(summary_path),
        ]
    )
    return code, json.loads(summary_path.read_text())


def step_states(summary) -> dict:
    return {name: step["state"] for name, step in summary["steps"].items()}


def ensure_serving(faults) -> str:
    """The Model artifact uri serving as version 1 (pushed by the first test, or now when a test
    runs alone)."""
    if "serving_model" not in faults:
        code, summary = run_faults(faults)
        assert code == 0 and summary["push"]["version"] == 1, summary["message"]
        faults["serving_model"] = summary["steps"]["trainer"]["outputs"]["model"]
    return faults["serving_model"]


def test_fault_a_step_that_raises_fails_the_run_and_the_next_run_recovers(faults, monkeypatch, capsys):
    from components.trainer import executor as trainer_executor

    def broken(ctx):
        with open(os.path.join(ctx.outputs["model"], "half.bin"), "wb") as f:
            f.write(b"half a model")
        raise RuntimeError("injected fault: the trainer's disk went away\nsecond line of detail")

    monkeypatch.setattr(trainer_executor, "run", broken)
    code, summary = run_faults(faults)
    assert code == 1
    assert summary["status"] == "failed" and summary["exit_code"] == 1
    assert summary["message"] == "trainer failed: injected fault: the trainer's disk went away"
    assert step_states(summary) == {
        "example_gen": "ran",
        "statistics_gen": "ran",
        "schema_gen": "ran",
        "example_validator": "ran",
        "trainer": "failed",
        "evaluator": "skipped",
        "pusher": "skipped",
    }
    assert summary["steps"]["trainer"]["error"] == "injected fault: the trainer's disk went away"
    assert summary["push"]["pushed"] == 0
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")] == [
        "error: trainer failed: injected fault: the trainer's disk went away"
    ]
    root = faults["base"] / "root"
    assert os.listdir(root / "trainer" / "model") == []  # the half-written output was not kept
    assert not os.path.exists(root / "serving")

    monkeypatch.undo()
    code, summary = run_faults(faults)
    assert code == 0, summary["message"]
    assert step_states(summary) == {
        **{s: "cached" for s in ("example_gen", "statistics_gen", "schema_gen", "example_validator")},
        "trainer": "ran",
        "evaluator": "ran",
        "pusher": "ran",
    }
    assert summary["push"]["pushed"] == 1 and summary["push"]["version"] == 1
    faults["serving_model"] = summary["steps"]["trainer"]["outputs"]["model"]


def test_fault_a_huge_learning_rate_stops_training_and_pushes_nothing(faults):
    ensure_serving(faults)
    code, summary = run_faults(faults, {"trainer": {"learning_rate": 1e12, "optimizer": "sgd"}})
    assert code == 1
    assert summary["steps"]["trainer"]["state"] == "failed"
    assert summary["steps"]["trainer"]["error"].startswith(("NaN loss at step", "Inf loss at step"))
    assert summary["message"].startswith("trainer failed: ")
    assert step_states(summary)["evaluator"] == step_states(summary)["pusher"] == "skipped"
    assert summary["push"]["pushed"] == 0
    assert numbered(faults["base"] / "root" / "serving") == ["1"]


def test_fault_a_tampered_serving_model_is_refused_by_the_evaluator(faults):
    serving_model = ensure_serving(faults)
    model_fixtures.tamper_with_variables(serving_model)  # the artifact the baseline is read from
    write_mnist_slice(str(faults["base"] / "data" / "span-2"), 1000, 200, offset=1000)
    try:
        # Warm start (on by default) reads the serving model first: the trainer refuses it.
        code, summary = run_faults(faults)
        assert code == 1 and summary["data"]["spans"] == [2]
        assert step_states(summary)["trainer"] == "failed"
        error = summary["steps"]["trainer"]["error"]
        assert error.startswith(f"base model {serving_model}/{SERVING_SUBDIR} (artifact id ")
        assert "does not match the recorded" in error
        assert numbered(faults["base"] / "root" / "serving") == ["1"]
        # Without warm start the evaluator, reading it as the baseline, refuses it.
        code, summary = run_faults(faults, {"trainer": {"warm_start": False}})
    finally:
        model_fixtures.tamper_with_variables(serving_model)  # flips the byte back
    assert code == 1
    assert summary["data"]["spans"] == [2]
    assert step_states(summary)["trainer"] == "ran"
    assert step_states(summary)["evaluator"] == "failed"
    assert step_states(summary)["pusher"] == "skipped"
    error = summary["steps"]["evaluator"]["error"]
    assert error.startswith(f"baseline model {serving_model}/{SERVING_SUBDIR} (artifact id ")
    assert "does not match the recorded" in error
    assert summary["message"] == f"evaluator failed: {error}"
    assert summary["push"]["pushed"] == 0
    assert "evaluation" not in summary  # no metrics were computed, none are reported
    serving = faults["base"] / "root" / "serving"
    assert numbered(serving) == ["1"]
    assert not [p for p in (faults["base"] / "root").glob("*/*/.staging-*")]
    faults["span2_trained"] = True


def test_fault_no_thresholds_blesses_nothing_and_says_why(faults):
    ensure_serving(faults)
    span2 = faults["base"] / "data" / "span-2"
    if not span2.exists():
        write_mnist_slice(str(span2), 1000, 200, offset=1000)
    # Without warm start, as the tampering test trained span 2: its model is a cache hit.
    code, summary = run_faults(faults, NO_THRESHOLDS, {"trainer": {"warm_start": False}})
    assert code == 0, summary["message"]  # evaluated, not blessed, nothing pushed: a normal outcome
    assert summary["data"]["spans"] == [2]
    if faults.get("span2_trained"):  # trained before the evaluator refused; still verifies
        assert step_states(summary)["trainer"] == "cached"
    assert step_states(summary)["evaluator"] == "ran"
    assert summary["evaluation"]["blessed"] == 0
    assert summary["evaluation"]["reasons"] == ["no thresholds configured"]
    assert summary["evaluation"]["metrics"]["baseline"]  # it did compare against the serving model
    assert summary["push"]["pushed"] == 0
    assert summary["push"]["reason"] == "model not blessed: no thresholds configured"
    assert numbered(faults["base"] / "root" / "serving") == ["1"]


def test_the_serving_model_is_the_one_pushed_into_this_serving_folder(tmp_path, saved_model):
    """Two serving folders fed from one pipeline root: each run compares with what serves in
    its own folder, never with a model published elsewhere."""
    from pipeline import resolvers
    from pipeline.core.metadata import open_store

    store = open_store(str(tmp_path / "root"))
    serving_a, serving_b = str(tmp_path / "serving_a"), str(tmp_path / "serving_b")
    model_a = _record_model(store, saved_model["uri"], saved_model["digest"])
    model_b = _record_model(store, saved_model["uri"], saved_model["digest"])
    _record_push(store, model_a, 1, serving_a)
    _record_push(store, model_b, 1, serving_b)
    assert resolvers.latest_pushed_model(store, serving_a).id == model_a
    assert resolvers.latest_pushed_model(store, serving_b).id == model_b
    assert resolvers.serving_model(str(tmp_path / "serving_c"))(store, {}) is None
