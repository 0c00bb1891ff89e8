"""A write fault anywhere ends clean (docs/reliability.md, "A write fault anywhere ends clean").

Real faults, on real file systems: a read-only pipeline root and a read-only serving folder
(tmpfs mounted read-only: the tests run as root, for whom chmod stops no write), a serving folder
that fills during the pusher's copy, and a trainer output that fills during the serving
SavedModel's export (small tmpfs). Each run must end with exit 1 and one `error:` line naming
the path and the reason, with nothing committed or published and both locks free; the next run,
with the fault gone (the same file system remounted writable or larger, so whatever the failed
run left is still there), must end as a clean run does.
"""

import contextlib
import json
import os
import subprocess

import pytest
from mnist_slices import write_mnist_slice
from run_configs import small_lenient

from pipeline.cli import main
from pipeline.core.digest import directory_digest
from pipeline.core.lock import exclusive_lock, pipeline_lock_path
from pipeline.formats import pushed_model
from pipeline.formats.model import SERVING_SUBDIR

# lock_timeout_s = 0: a lock a failed run left held makes the next run exit 4 at once.
CONFIG = "lock_timeout_s = 0\n" + small_lenient(train_steps=60)
SERVING_HIDDEN = {pushed_model.LOCK_FILE, ".version-1.json"}


def _mount(path, options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)


def _remount(path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


@contextlib.contextmanager
def tmpfs(path, options: str):
    """A tmpfs mounted at `path` (created) for the block; `options` as mount -o takes them."""
    os.makedirs(path, exist_ok=True)
    _mount(path, options)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module", autouse=True)
def can_mount(tmp_path_factory):
    probe = tmp_path_factory.mktemp("probe")
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a read-only or small tmpfs (chmod stops no write as root)")
    try:
        _mount(probe, "size=64k")
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    subprocess.run(["umount", str(probe)], check=True)


@pytest.fixture(scope="module")
def data_and_config(tmp_path_factory):
    base = tmp_path_factory.mktemp("write_faults")
    data = write_mnist_slice(str(base / "data"), 1000, 200)
    config = base / "config.toml"
    config.write_text(CONFIG)
    return data, str(config)


def _run(data_and_config, root, *extra) -> int:
    data, config = data_and_config
    return main(["--config", config, "--data-root", data, "--pipeline-root", str(root), *extra])


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory, data_and_config):
    """A root whose model is trained and evaluated; a run into an empty serving folder runs only
    the pusher (the evaluator's baseline is the model serving in *that* folder: none)."""
    root = tmp_path_factory.mktemp("trained") / "root"
    serving = root.parent / "unused-serving"
    assert _run(data_and_config, root, "--serving-dir", str(serving), "--to", "evaluator") == 0
    return root


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, errors
    return errors[0]


def _staging_left(*folders) -> list:
    return [
        os.path.join(top, name)
        for folder in folders
        if os.path.isdir(folder)
        for top, dirs, _ in os.walk(folder)
        for name in dirs
        if name.startswith(".staging-")
    ]


def _assert_locks_free(root, serving=None) -> None:
    with exclusive_lock(pipeline_lock_path(str(root)), 0):
        pass
    if serving is not None:
        with pushed_model.serving_lock(str(serving), 0):
            pass


def _latest_summary(root) -> dict:
    runs = os.path.join(root, "runs")
    latest = max(os.listdir(runs), key=lambda name: os.path.getmtime(os.path.join(runs, name)))
    with open(os.path.join(runs, latest, "summary.json")) as f:
        return json.load(f)


def _assert_published_as_a_clean_run(root, serving) -> None:
    """The end state of a clean run: version 1 serving the trainer's model (files and record),
    nothing else in the serving folder, no staging left anywhere, the run completed."""
    summary = _latest_summary(root)
    assert summary["status"] == "completed" and summary["exit_code"] == 0
    assert summary["push"]["pushed"] == 1 and summary["push"]["version"] == 1
    assert sorted(os.listdir(serving)) == sorted(SERVING_HIDDEN | {"1"})
    model_uri = summary["steps"]["trainer"]["outputs"]["model"]
    with open(os.path.join(serving, ".version-1.json")) as f:
        record = json.load(f)
    assert record["model_uri"] == model_uri and record["version"] == 1
    assert directory_digest(os.path.join(serving, "1")) == record["model_digest"]
    assert directory_digest(os.path.join(model_uri, SERVING_SUBDIR)) == record["model_digest"]
    assert _staging_left(root, serving) == []
    _assert_locks_free(root, serving)


def test_a_read_only_pipeline_root_fails_in_one_line_and_the_next_run_completes(
    tmp_path, data_and_config, capsys
):
    root = tmp_path / "root"
    with tmpfs(root, "size=64m,ro"):
        assert _run(data_and_config, root, "--to", "example_gen") == 1
        assert (
            _one_error(capsys)
            == f"error: pipeline root: cannot write {root}/.pipeline.lock: Read-only file system"
        )
        assert os.listdir(root) == []
        # A root that does not exist yet, under a read-only folder.
        assert _run(data_and_config, root / "sub", "--to", "example_gen") == 1
        assert _one_error(capsys) == f"error: pipeline root: cannot write {root}/sub: Read-only file system"

        _remount(root, "rw")
        assert _run(data_and_config, root, "--to", "example_gen") == 0
        summary = _latest_summary(root)
        assert summary["status"] == "completed" and summary["steps"]["example_gen"]["state"] == "ran"
        assert _staging_left(root) == []
        _assert_locks_free(root)


def test_a_read_only_serving_folder_publishes_nothing_and_the_next_run_publishes(
    tmp_path, data_and_config, trained_root, capsys
):
    serving = tmp_path / "serving"
    with tmpfs(serving, "size=64m,ro"):
        assert _run(data_and_config, trained_root, "--serving-dir", str(serving)) == 1
        line = _one_error(capsys)
        assert (
            line
            == f"error: push failed: serving dir: cannot write {serving}/.push.lock: Read-only file system"
        )
        assert os.listdir(serving) == []
        summary = _latest_summary(trained_root)
        assert summary["steps"]["pusher"]["properties"]["pushed"] == 0 and summary["push"]["pushed"] == 0
        _assert_locks_free(trained_root)

        _remount(serving, "rw")
        assert _run(data_and_config, trained_root, "--serving-dir", str(serving)) == 0
        _assert_published_as_a_clean_run(trained_root, serving)


def test_a_serving_disk_that_fills_during_the_copy_publishes_nothing_and_the_next_run_publishes(
    tmp_path, data_and_config, trained_root, capsys
):
    serving = tmp_path / "serving"
    with tmpfs(serving, "size=1m"):  # the SavedModel is ~13 MB
        assert _run(data_and_config, trained_root, "--serving-dir", str(serving)) == 1
        line = _one_error(capsys)
        assert line.startswith(f"error: push failed: push to {serving} failed at 'copy ")
        assert f": OSError: {serving}/.staging-1-" in line and line.endswith(": No space left on device")
        assert sorted(os.listdir(serving)) == [pushed_model.LOCK_FILE]  # no staging, no record
        assert _latest_summary(trained_root)["push"]["pushed"] == 0
        _assert_locks_free(trained_root, serving)

        _remount(serving, "size=64m")
        assert _run(data_and_config, trained_root, "--serving-dir", str(serving)) == 0
        _assert_published_as_a_clean_run(trained_root, serving)


# The trainer's run folder holds two checkpoints (~78 MB with Adam's slots) when the chosen
# evaluation's SavedModel (~13 MB) is exported into it: 84 MB fits the first, not the second.
RUN_FOLDER_FITS_CHECKPOINTS_NOT_EXPORT = "size=84m"


def test_a_disk_that_fills_during_the_trainers_export_commits_nothing_and_the_next_run_completes(
    tmp_path, data_and_config, capsys
):
    root = tmp_path / "root"
    serving = tmp_path / "serving"
    assert _run(data_and_config, root, "--serving-dir", str(serving), "--to", "example_validator") == 0
    with tmpfs(root / "trainer" / "model_run", RUN_FOLDER_FITS_CHECKPOINTS_NOT_EXPORT):
        assert _run(data_and_config, root, "--serving-dir", str(serving)) == 1
        line = _one_error(capsys)
        assert line.startswith(f"error: trainer failed: cannot write {root}/trainer/model_run/.staging-")
        assert "/export/" in line and line.endswith(": No space left on device"), line
        summary = _latest_summary(root)
        assert (
            summary["steps"]["trainer"]["state"] == "failed"
            and summary["steps"]["pusher"]["state"] == "skipped"
        )
        assert (
            os.listdir(root / "trainer" / "model_run") == [] and os.listdir(root / "trainer" / "model") == []
        )
        assert not os.path.exists(serving) or pushed_model.list_versions(str(serving)) == []
        _assert_locks_free(root)

        _remount(root / "trainer" / "model_run", "size=256m")
        assert _run(data_and_config, root, "--serving-dir", str(serving)) == 0
        assert _latest_summary(root)["steps"]["trainer"]["state"] == "ran"
        _assert_published_as_a_clean_run(root, serving)


def test_the_exports_move_across_file_systems_copies_or_names_the_file_it_could_not_write(tmp_path):
    from components.trainer.export import move_tree  # noqa: PLC0415  TensorFlow, for this test only

    def export(name):
        src = tmp_path / name / "variables"
        src.mkdir(parents=True)
        (src.parent / "saved_model.pb").write_bytes(b"p" * 1000)
        (src / "variables.data-00000-of-00001").write_bytes(os.urandom(512 * 1024))
        return src.parent

    with tmpfs(tmp_path / "small", "size=256k") as small, tmpfs(tmp_path / "big", "size=4m") as big:
        src = export("fits")
        digest = directory_digest(str(src))
        move_tree(str(src), str(big / SERVING_SUBDIR))
        assert not src.exists() and directory_digest(str(big / SERVING_SUBDIR)) == digest

        src = export("does-not-fit")
        with pytest.raises(OSError) as failed:
            move_tree(str(src), str(small / SERVING_SUBDIR))
        assert failed.value.strerror == "No space left on device"
        assert failed.value.filename2 == str(
            small / SERVING_SUBDIR / "variables" / "variables.data-00000-of-00001"
        )
        assert src.exists()  # the source stays until the copy is whole
