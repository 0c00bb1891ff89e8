"""The pusher: gatekeeping, atomic versioned publishing, failure injection and rollback."""

import errno
import json
import os
import shutil

import model_fixtures
import pytest
from step_context import step_context

from components.pusher import executor, serving_check
from components.pusher import publish as publish_lib
from pipeline import operations
from pipeline.config import PusherConfig
from pipeline.core.digest import directory_digest
from pipeline.core.errors import ConfigError, ModelIntegrityError, PushError
from pipeline.core.step import Artifact
from pipeline.formats import blessing as blessing_format
from pipeline.formats import model as model_format
from pipeline.formats import pushed_model as pushed_format


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("pusher_assets")
    good, weak = str(root / "good"), str(root / "weak")
    examples = model_fixtures.write_examples(str(root / "examples"), 20)
    return {
        "examples": examples,
        "good": (good, model_fixtures.build_model(good, steps=40)),
        "weak": (weak, model_fixtures.build_model(weak, steps=2)),
        "records": serving_check.read_examples(examples, 8),
    }


def blessing_artifact(path, model_digest, blessed=True, baseline_id=0, artifact_id=50, reasons=("test",)):
    os.makedirs(path, exist_ok=True)
    blessing_format.write_blessing(
        path,
        blessing_format.BlessingRecord(
            blessed=blessed,
            reasons=[] if blessed else list(reasons),
            checks=[],
            candidate_model={"digest": model_digest},
            baseline_model={"id": baseline_id} if baseline_id else None,
            # The gate's evidence that a record blessed over a serving model must carry.
            policy="superiority" if baseline_id else None,
            comparisons=[{"slice": "overall"}] if baseline_id else [],
        ),
    )
    return Artifact(
        path, "ModelBlessing", {"blessed": int(blessed), "baseline_model_id": baseline_id}, artifact_id
    )


def make_ctx(tmp_path, assets, serving_dir, model=None, blessing=None, baseline=None):
    uri, digest = assets["good"]
    model = model or Artifact(uri, "Model", {"digest": digest}, 20)
    blessing = blessing or blessing_artifact(str(tmp_path / "blessing"), model.properties.get("digest"))
    inputs = {
        "model": model,
        "blessing": blessing,
        "examples": Artifact(assets["examples"], "Examples", {}, 1),
        "baseline_model": baseline,
    }
    return step_context(
        "pusher",
        inputs,
        {"pushed_model": str(tmp_path / "pushed_model")},
        params=PusherConfig(serving_dir=serving_dir, verify_examples=8),
    )


def push_json(ctx):
    with open(os.path.join(ctx.outputs["pushed_model"], "push.json")) as f:
        return json.load(f)


def serving_entries(serving_dir):
    return sorted(os.listdir(serving_dir)) if os.path.isdir(serving_dir) else []


def numbered(serving_dir):
    return [e for e in serving_entries(serving_dir) if e.isdigit()]


def staging(serving_dir):
    return [e for e in serving_entries(serving_dir) if e.startswith(".staging-")]


# --- gate ---------------------------------------------------------------------------------------


def test_not_blessed_reason_is_the_gates_first_reason_and_how_many_more(tmp_path, assets):
    _, digest = assets["good"]
    blessing = blessing_artifact(
        str(tmp_path / "b"),
        digest,
        blessed=False,
        reasons=(
            "overall accuracy 0.8593 < accuracy_floor 0.9500",
            "label=4 accuracy 0.7342 < slice_accuracy_floor 0.9000",
        ),
    )
    outcome = executor.run(make_ctx(tmp_path, assets, str(tmp_path / "serving"), blessing=blessing))
    assert outcome.execution_properties["reason"] == (
        "model not blessed: overall accuracy 0.8593 < accuracy_floor 0.9500 "
        f"(+1 more in {os.path.join(blessing.uri, 'NOT_BLESSED')})"
    )


def test_not_blessed_pushes_nothing(tmp_path, assets):
    serving = str(tmp_path / "serving")
    _, digest = assets["good"]
    ctx = make_ctx(
        tmp_path, assets, serving, blessing=blessing_artifact(str(tmp_path / "b"), digest, blessed=False)
    )
    outcome = executor.run(ctx)
    assert outcome.stop_run is None
    assert (
        outcome.execution_properties["pushed"] == 0
        and "not blessed" in outcome.execution_properties["reason"]
    )
    assert outcome.output_properties["pushed_model"] == {
        "pushed": 0,
        "version": 0,
        "model_id": 20,
        "serving_dir": serving,
    }
    assert push_json(ctx)["pushed"] == 0
    assert numbered(serving) == []


def test_blessed_marker_without_blessed_property_is_refused(tmp_path, assets):
    serving = str(tmp_path / "serving")
    _, digest = assets["good"]
    blessing = blessing_artifact(str(tmp_path / "b"), digest)
    blessing = Artifact(blessing.uri, blessing.type_name, {"blessed": 0, "baseline_model_id": 0}, blessing.id)
    outcome = executor.run(make_ctx(tmp_path, assets, serving, blessing=blessing))
    assert outcome.execution_properties["pushed"] == 0 and numbered(serving) == []


def test_a_decision_blessed_over_a_baseline_without_its_evidence_is_refused(tmp_path, assets):
    """A decision.json claiming a blessing over the serving model, but holding no policy or no
    overall comparison (hand-edited, or from a gate that skipped its statistics), pushes nothing."""
    serving = str(tmp_path / "serving")
    _, digest = assets["good"]
    blessing = blessing_artifact(str(tmp_path / "b"), digest, baseline_id=7)
    path = os.path.join(blessing.uri, "decision.json")
    for strip in ("comparisons", "policy"):
        data = json.load(open(path))
        data[strip] = [] if strip == "comparisons" else None
        with open(path, "w") as f:
            json.dump(data, f)
        (tmp_path / strip).mkdir()
        outcome = executor.run(make_ctx(tmp_path / strip, assets, serving, blessing=blessing))
        assert outcome.execution_properties["pushed"] == 0, strip
        assert "blessed over a baseline" in outcome.execution_properties["reason"]
    assert numbered(serving) == []


def test_blessing_of_another_model_is_refused(tmp_path, assets):
    serving = str(tmp_path / "serving")
    outcome = executor.run(
        make_ctx(tmp_path, assets, serving, blessing=blessing_artifact(str(tmp_path / "b"), "0" * 64))
    )
    assert outcome.execution_properties["pushed"] == 0
    assert "different model" in outcome.execution_properties["reason"]
    assert numbered(serving) == []


def test_blessed_pushes_strictly_increasing_versions(tmp_path, assets):
    serving = str(tmp_path / "serving")
    uri, digest = assets["good"]
    (tmp_path / "a").mkdir()
    first = executor.run(make_ctx(tmp_path / "a", assets, serving))
    assert first.stop_run is None
    assert first.output_properties["pushed_model"] == {
        "pushed": 1,
        "version": 1,
        "model_id": 20,
        "serving_dir": serving,
    }
    assert os.path.isfile(os.path.join(serving, "1", "saved_model.pb"))
    assert os.path.isdir(os.path.join(serving, "1", "variables"))
    assert os.stat(os.path.join(serving, "1")).st_mode & 0o755 == 0o755  # readable by the server
    assert directory_digest(os.path.join(serving, "1")) == digest

    # The next run: the latest pushed model (id 60) is the baseline it was evaluated against.
    (tmp_path / "b").mkdir()
    ctx = make_ctx(
        tmp_path / "b",
        assets,
        serving,
        blessing=blessing_artifact(str(tmp_path / "b" / "blessing"), digest, baseline_id=60),
        baseline=Artifact(uri, "Model", {"digest": digest}, 60),
    )
    second = executor.run(ctx)
    assert second.execution_properties == {
        "pushed": 1,
        "version": 2,
        "reason": f"published as version 2 in {serving}",
    }
    record = push_json(ctx)
    assert record["pushed"] == 1 and record["version"] == 2 and record["model_digest"] == digest
    assert numbered(serving) == ["1", "2"] and staging(serving) == []
    model_format.check_serving(os.path.join(serving, "2"), assets["records"])


@pytest.mark.parametrize("evaluated_against,current", [(0, 60), (60, 61), (60, None)])
def test_baseline_changed_since_evaluation_is_not_pushed(tmp_path, assets, evaluated_against, current):
    serving = str(tmp_path / "serving")
    uri, digest = assets["good"]
    baseline = Artifact(uri, "Model", {"digest": digest}, current) if current else None
    ctx = make_ctx(
        tmp_path,
        assets,
        serving,
        baseline=baseline,
        blessing=blessing_artifact(str(tmp_path / "b"), digest, baseline_id=evaluated_against),
    )
    outcome = executor.run(ctx)
    assert outcome.stop_run is None and outcome.execution_properties["pushed"] == 0
    assert outcome.execution_properties["reason"].startswith("baseline changed since evaluation")
    assert numbered(serving) == []


def test_model_digest_mismatch_is_refused(tmp_path, assets):
    serving = str(tmp_path / "serving")
    uri, digest = assets["good"]
    copy = str(tmp_path / "model")
    model_fixtures.copy_model(uri, copy)
    model_fixtures.tamper_with_variables(copy)
    ctx = make_ctx(tmp_path, assets, serving, model=Artifact(copy, "Model", {"digest": digest}, 20))
    with pytest.raises(ModelIntegrityError, match="model to push"):
        executor.run(ctx)
    assert numbered(serving) == [] and staging(serving) == []


# --- a push killed after its version appeared ------------------------------------------------


def version_records(serving_dir):
    return [e for e in serving_entries(serving_dir) if e.startswith(".version-")]


def killed_push(ctx, assets, model_id=20, pipeline_root=None):
    """Publishes the good model with a version record, as a push that died before its record."""
    uri, digest = assets["good"]
    record = pushed_format.version_record(pipeline_root or ctx.pipeline_root, "killed", model_id, uri, digest)
    return publish_lib.publish(
        os.path.join(uri, model_format.SERVING_SUBDIR), ctx.params.serving_dir, digest, None, record=record
    )


def test_a_push_that_died_after_its_rename_is_recorded_not_repeated(tmp_path, assets):
    serving = str(tmp_path / "serving")
    # The blessing now refuses, yet the version serves: the pusher records what serves.
    ctx = make_ctx(
        tmp_path,
        assets,
        serving,
        blessing=blessing_artifact(str(tmp_path / "refused"), assets["good"][1], blessed=False),
    )
    assert killed_push(ctx, assets) == 1
    outcome = executor.run(ctx)
    reason = "already serving (version 1, recovered from an interrupted push)"
    assert outcome.stop_run is None
    assert outcome.execution_properties == {"pushed": 1, "version": 1, "reason": reason}
    assert outcome.output_properties["pushed_model"] == {
        "pushed": 1,
        "version": 1,
        "model_id": 20,
        "serving_dir": serving,
    }
    assert push_json(ctx)["reason"] == reason
    assert numbered(serving) == ["1"] and version_records(serving) == [".version-1.json"]


@pytest.mark.parametrize("other", ["model", "pipeline_root", "no_record"])
def test_a_version_recorded_for_another_model_or_root_is_not_adopted(tmp_path, assets, other):
    serving = str(tmp_path / "serving")
    ctx = make_ctx(tmp_path, assets, serving)
    killed_push(
        ctx,
        assets,
        model_id=21 if other == "model" else 20,
        pipeline_root=str(tmp_path / "elsewhere") if other == "pipeline_root" else None,
    )
    if other == "no_record":
        os.remove(pushed_format.version_record_path(serving, 1))
    outcome = executor.run(ctx)
    assert outcome.execution_properties["reason"] == f"published as version 2 in {serving}"
    assert numbered(serving) == ["1", "2"]


def test_every_version_has_its_record_and_a_record_without_its_version_is_removed(tmp_path, assets):
    serving = str(tmp_path / "serving")
    uri, digest = assets["good"]
    ctx = make_ctx(tmp_path, assets, serving)
    assert executor.run(ctx).execution_properties["version"] == 1
    record = json.load(open(pushed_format.version_record_path(serving, 1)))
    assert {k: record[k] for k in ("version", "model_id", "model_uri", "model_digest", "run_id")} == {
        "version": 1,
        "model_id": 20,
        "model_uri": uri,
        "model_digest": digest,
        "run_id": "test",
    }
    assert record["pipeline_root"] == os.path.realpath(ctx.pipeline_root)
    # Beside the version, not in it: the version's files are still exactly the model.
    assert directory_digest(os.path.join(serving, "1")) == digest
    # Debris of a push killed between writing the record and the rename.
    with open(pushed_format.version_record_path(serving, 2), "w") as f:
        f.write('{"version": 2, "model_')
    assert killed_push(ctx, assets) == 2
    assert json.load(open(pushed_format.version_record_path(serving, 2)))["run_id"] == "killed"
    with open(pushed_format.version_record_path(serving, 7), "w") as f:
        f.write("{}")
    assert publish_lib.publish(os.path.join(uri, model_format.SERVING_SUBDIR), serving, digest, None) == 3
    assert version_records(serving) == [".version-1.json", ".version-2.json"]


# --- failures during the push -----------------------------------------------------------------


def fail_on_second_copy(monkeypatch):
    """Makes shutil.copy2 copy one file, then fail with ENOSPC after writing part of the next."""
    real_copy = shutil.copy2
    calls = []

    def copy2(src, dst, *args, **kwargs):
        calls.append(src)
        if len(calls) == 2:
            with open(dst, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copy2", copy2)
    return calls


def test_copy_failure_leaves_nothing_and_stops_the_run(tmp_path, assets, monkeypatch):
    serving = str(tmp_path / "serving")
    calls = fail_on_second_copy(monkeypatch)
    ctx = make_ctx(tmp_path, assets, serving)
    outcome = executor.run(ctx)
    assert len(calls) == 2
    assert outcome.execution_properties["pushed"] == 0
    assert outcome.stop_run.startswith("push failed: ") and outcome.stop_exit_code == 1
    assert "No space left on device" in outcome.stop_run and "\n" not in outcome.stop_run
    assert push_json(ctx)["pushed"] == 0 and push_json(ctx)["version"] == 0
    assert numbered(serving) == [] and staging(serving) == []


def test_verify_failure_leaves_nothing_and_stops_the_run(tmp_path, assets, monkeypatch):
    serving = str(tmp_path / "serving")
    # The staged copy must answer these: garbage in place of serialized tf.Examples.
    monkeypatch.setattr(executor, "read_examples", lambda uri, n: [b"not a tf.Example"] * n)
    outcome = executor.run(make_ctx(tmp_path, assets, serving))
    assert outcome.execution_properties["pushed"] == 0 and outcome.stop_exit_code == 1
    assert "failed to answer" in outcome.stop_run
    assert numbered(serving) == [] and staging(serving) == [] and version_records(serving) == []


def test_a_rename_failure_removes_the_version_record_too(tmp_path, assets, monkeypatch):
    serving = str(tmp_path / "serving")
    real_rename = os.rename

    def rename(src, dst):
        if os.path.basename(src).startswith(".staging-"):
            raise OSError(errno.EIO, os.strerror(errno.EIO), dst)
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    outcome = executor.run(make_ctx(tmp_path, assets, serving))
    assert "failed at 'rename staging folder" in outcome.stop_run
    assert serving_entries(serving) == [".push.lock"]


def test_publish_refuses_a_copy_whose_digest_differs(tmp_path, assets):
    serving = str(tmp_path / "serving")
    uri, _ = assets["good"]
    with pytest.raises(PushError, match="staged copy .* has digest"):
        publish_lib.publish(os.path.join(uri, model_format.SERVING_SUBDIR), serving, "f" * 64, None)
    assert numbered(serving) == [] and staging(serving) == []


def test_publish_rejects_a_model_that_does_not_serve(tmp_path):
    serving = str(tmp_path / "serving")
    model = tmp_path / "not_a_model"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(PushError, match="does not load"):
        publish_lib.publish(
            str(model), serving, directory_digest(str(model)), serving_check.make_verify_fn([])
        )
    assert numbered(serving) == [] and staging(serving) == []


def test_stale_staging_is_cleaned_and_odd_names_ignored(tmp_path, assets):
    serving = tmp_path / "serving"
    for name in ("1", "2"):
        (serving / name).mkdir(parents=True)
    stale = serving / ".staging-3-killed"
    (stale / "variables").mkdir(parents=True)
    (stale / "saved_model.pb").write_bytes(b"half written")
    (serving / ".hidden9").mkdir()
    (serving / "17x").mkdir()
    (serving / "99").write_text("a file, not a version")
    uri, digest = assets["good"]
    version = publish_lib.publish(
        os.path.join(uri, model_format.SERVING_SUBDIR),
        str(serving),
        digest,
        serving_check.make_verify_fn(assets["records"]),
    )
    assert version == 3
    assert not stale.exists() and staging(str(serving)) == []
    assert directory_digest(str(serving / "3")) == digest


def test_publish_waits_for_the_serving_lock(tmp_path, assets):
    serving = str(tmp_path / "serving")
    uri, digest = assets["good"]
    with pushed_format.serving_lock(serving):
        with pytest.raises(PushError, match="lock .* not acquired"):
            publish_lib.publish(
                os.path.join(uri, model_format.SERVING_SUBDIR), serving, digest, None, lock_timeout_s=0.3
            )
    assert publish_lib.publish(os.path.join(uri, model_format.SERVING_SUBDIR), serving, digest, None) == 1


# --- rollback -----------------------------------------------------------------------------------


def test_rollback_republishes_an_earlier_version(tmp_path, assets):
    serving = str(tmp_path / "serving")
    (good_uri, good_digest), (weak_uri, weak_digest) = assets["good"], assets["weak"]
    verify = serving_check.make_verify_fn(assets["records"])
    assert (
        publish_lib.publish(os.path.join(good_uri, model_format.SERVING_SUBDIR), serving, good_digest, verify)
        == 1
    )
    assert (
        publish_lib.publish(os.path.join(weak_uri, model_format.SERVING_SUBDIR), serving, weak_digest, verify)
        == 2
    )

    assert operations.republish(serving) == 3
    assert directory_digest(os.path.join(serving, "3")) == good_digest != weak_digest
    model_format.check_serving(os.path.join(serving, "3"), assets["records"])

    assert operations.republish(serving, to_version=2, verify_fn=verify) == 4
    assert directory_digest(os.path.join(serving, "4")) == weak_digest
    assert numbered(serving) == ["1", "2", "3", "4"] and staging(serving) == []
    # History is untouched.
    assert directory_digest(os.path.join(serving, "1")) == good_digest
    assert directory_digest(os.path.join(serving, "2")) == weak_digest


def test_rollback_copy_failure_publishes_nothing(tmp_path, assets, monkeypatch):
    serving = str(tmp_path / "serving")
    (good_uri, good_digest), (weak_uri, weak_digest) = assets["good"], assets["weak"]
    publish_lib.publish(os.path.join(good_uri, model_format.SERVING_SUBDIR), serving, good_digest, None)
    publish_lib.publish(os.path.join(weak_uri, model_format.SERVING_SUBDIR), serving, weak_digest, None)
    fail_on_second_copy(monkeypatch)
    with pytest.raises(PushError, match="rollback to version 1: .*No space left"):
        operations.republish(serving)
    assert numbered(serving) == ["1", "2"] and staging(serving) == []


def test_rollback_errors_name_the_version(tmp_path, assets):
    serving = str(tmp_path / "serving")
    with pytest.raises(ConfigError, match="does not exist"):
        operations.republish(serving)
    uri, digest = assets["good"]
    publish_lib.publish(os.path.join(uri, model_format.SERVING_SUBDIR), serving, digest, None)
    with pytest.raises(ConfigError, match="need at least two"):
        operations.republish(serving)
    publish_lib.publish(os.path.join(uri, model_format.SERVING_SUBDIR), serving, digest, None)
    with pytest.raises(ConfigError, match="version 9 not found .*versions: 1, 2"):
        operations.republish(serving, to_version=9)
    with pytest.raises(ConfigError, match="version 2 is already the newest"):
        operations.republish(serving, to_version=2)
    assert numbered(serving) == ["1", "2"]
