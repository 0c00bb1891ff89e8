"""A metadata store that survives damage: the integrity check at open, the backup after every
run, and `run_local.py metadata restore` (fake-step pipelines, so each test takes a second)."""

import os
import signal
import sqlite3
import subprocess
import sys

import pytest
from test_runner import fake_pipeline, states

from pipeline.cli import main
from pipeline.core import store_backup
from pipeline.core.errors import StoreDamagedError
from pipeline.core.lock import exclusive_lock, pipeline_lock_path
from pipeline.core.metadata import open_store, store_path
from pipeline.core.runner import run_pipeline

PNG_HEADER = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


def _truncate_to_a_third(path):
    os.truncate(path, os.path.getsize(path) // 3)


def _zero_the_middle_third(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 3)
        f.write(b"\0" * (size // 3))


def _zero_one_page(path):
    # quick_check reports this one as rows ("Page N: btreeInitPage() ...") instead of an error.
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek((size // 2) // 4096 * 4096)
        f.write(b"\0" * 4096)


def _replace_by_text(path):
    with open(path, "w") as f:
        f.write("lineage, cache and baseline used to be here\n" * 100)


def _replace_by_png(path):
    with open(path, "wb") as f:
        f.write(PNG_HEADER + os.urandom(4000))


DAMAGE = {
    "cut to a third": _truncate_to_a_third,
    "middle third zeroed": _zero_the_middle_third,
    "one page zeroed": _zero_one_page,
    "replaced by a text file": _replace_by_text,
    "replaced by a PNG": _replace_by_png,
}


@pytest.fixture
def pipeline(tmp_path):
    return fake_pipeline(tmp_path)


@pytest.fixture
def ran(tmp_path):
    """A root after three completed runs (a store of a few hundred KiB); the pipeline returned
    is the last one run, so running it again is all cached."""
    for n in (1, 2, 3):
        assert run_pipeline(fake_pipeline(tmp_path, params={"n": n})).exit_code == 0
    return fake_pipeline(tmp_path)


def _tree(root):
    """Every path under `root` with its size and mtime (what 'nothing touched' compares)."""
    found = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            found[os.path.relpath(path, root)] = (st.st_size if name in files else None, st.st_mtime_ns)
    return found


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _one_error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def _expected_line(root):
    """The start and end of the one line a damaged store gives (what SQLite found goes between)."""
    return (
        f"error: metadata store {store_path(root)} is damaged (",
        f"); restore its last good backup with: run_local.py metadata restore --pipeline-root {root}",
    )


def _damage_with_a_staging_folder_left(pipeline, damage):
    """Damages the store of `pipeline`'s root, beside a staging folder a killed step left (which
    a healthy run would delete); returns the root's tree as it then is."""
    staging = os.path.join(pipeline.root, "example_gen", "numbers", ".staging-99")
    os.makedirs(staging)
    damage(store_path(pipeline.root))
    return _tree(pipeline.root)


# ---- the check at open --------------------------------------------------------------------


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_store_stops_the_run_before_anything_in_the_root_changes(ran, damage):
    before = _damage_with_a_staging_folder_left(ran, damage)
    damaged = _bytes(store_path(ran.root))
    with pytest.raises(StoreDamagedError) as raised:
        run_pipeline(ran)
    message = str(raised.value)
    start, end = _expected_line(ran.root)
    assert f"error: {message}".startswith(start) and message.endswith(end)
    assert "\n" not in message
    # Only the lock file may change (its holder's pid): no cleanup, no run folder, no summary.
    after = _tree(ran.root)
    after.pop(".pipeline.lock"), before.pop(".pipeline.lock")
    assert after == before
    assert _bytes(store_path(ran.root)) == damaged


@pytest.mark.parametrize("command", ["status", "run"])
@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_cli_on_a_damaged_store_prints_one_line_and_exits_1(ran, damage, command, capsys):
    before = _damage_with_a_staging_folder_left(ran, damage)
    capsys.readouterr()
    assert main([command, "--pipeline-root", ran.root]) == 1
    line = _one_error_line(capsys)
    start, end = _expected_line(ran.root)
    assert line.startswith(start) and line.endswith(end), line
    after = _tree(ran.root)
    after.pop(".pipeline.lock", None), before.pop(".pipeline.lock")
    assert after == before


def test_the_line_says_what_sqlite_found(ran, capsys):
    store = store_path(ran.root)
    good = _bytes(store)
    _replace_by_text(store)
    assert main(["status", "--pipeline-root", ran.root]) == 1
    assert "(file is not a database)" in _one_error_line(capsys)
    with open(store, "wb") as f:
        f.write(good[: len(good) // 3])
    assert main(["status", "--pipeline-root", ran.root]) == 1
    assert "(database disk image is malformed)" in _one_error_line(capsys)


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_store_missing_or_emptied_beside_its_backup_is_not_silently_started_afresh(ran, state, capsys):
    store = store_path(ran.root)
    if state == "missing":
        os.unlink(store)
    else:
        os.truncate(store, 0)
    with pytest.raises(
        StoreDamagedError,
        match=f"metadata store {store} is {state} but its backup "
        f"{store}.backup exists; restore it with: run_local.py "
        f"metadata restore --pipeline-root {ran.root}",
    ):
        run_pipeline(ran)
    assert os.path.exists(store) == (state == "empty")  # ml-metadata did not create one
    assert main(["status", "--pipeline-root", ran.root]) == 1
    assert f"is {state} but its backup" in _one_error_line(capsys)


def test_a_new_root_without_store_or_backup_still_starts_a_store(pipeline):
    assert run_pipeline(pipeline).exit_code == 0


def _kill_a_writer_mid_transaction(store):
    """Leaves the hot journal of a writer SIGKILLed inside a transaction beside `store`."""
    script = (
        "import os, signal, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA cache_size=1'); c.execute('BEGIN')\n"
        "c.execute('DELETE FROM Artifact'); c.execute('CREATE TABLE junk(x)')\n"
        "for _ in range(500): c.execute('INSERT INTO junk VALUES (?)', (os.urandom(400),))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, store])
    assert proc.returncode == -signal.SIGKILL
    assert os.path.getsize(store + "-journal") > 0


def test_a_writer_killed_mid_transaction_is_recovered_not_called_damaged(ran):
    """A hot journal cannot be rolled back through a read-only connection; the check lets
    SQLite recover it (on a copy first, then the file), as ml-metadata's open would."""
    _kill_a_writer_mid_transaction(store_path(ran.root))
    result = run_pipeline(ran)
    assert result.exit_code == 0
    assert set(states(result).values()) == {"cached"}  # the killed transaction is undone


def test_a_damaged_store_with_a_hot_journal_is_reported_as_it_was(ran):
    store = store_path(ran.root)
    _kill_a_writer_mid_transaction(store)
    _truncate_to_a_third(store)
    damaged, journal = _bytes(store), _bytes(store + "-journal")
    with pytest.raises(StoreDamagedError, match="is damaged"):
        run_pipeline(ran)
    assert _bytes(store) == damaged and _bytes(store + "-journal") == journal


# ---- the backup after every run -----------------------------------------------------------


def _quick_check(path):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute("PRAGMA quick_check").fetchall()


def _executions(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, last_known_state FROM Execution ORDER BY id").fetchall()
    finally:
        conn.close()


def test_every_completed_run_leaves_a_checked_backup_of_the_store(pipeline):
    backup = store_path(pipeline.root) + ".backup"
    run_pipeline(pipeline)
    assert _quick_check(backup) == [("ok",)]
    assert _executions(backup) == _executions(store_path(pipeline.root))
    assert not [n for n in os.listdir(pipeline.root) if n.endswith(".part")]
    run_pipeline(pipeline)  # a cached run records executions too: the backup follows it
    assert _executions(backup) == _executions(store_path(pipeline.root))


def test_a_run_that_fails_or_is_stopped_is_backed_up_too(tmp_path):
    stopped = run_pipeline(fake_pipeline(tmp_path, gate_stop=True))
    assert stopped.exit_code == 3
    backup = store_path(stopped.summary["pipeline_root"]) + ".backup"
    assert _executions(backup) == _executions(store_path(stopped.summary["pipeline_root"]))


def test_a_damaged_store_never_replaces_the_good_backup(ran):
    store = store_path(ran.root)
    backup = store + ".backup"
    good = _bytes(backup)
    _zero_one_page(store)
    with pytest.raises(StoreDamagedError, match="fails its integrity check .*previous backup .* was kept"):
        store_backup.backup_store(store)
    assert store_backup.keep_backup(store) is None  # the run's variant: logged, not raised
    assert _bytes(backup) == good
    assert not os.path.exists(backup + ".part")


# ---- restore --------------------------------------------------------------------------------


def test_restore_round_trip_keeps_the_damaged_file_and_the_next_run_is_all_cached(ran, capsys):
    store = store_path(ran.root)
    expected = _executions(store)
    _truncate_to_a_third(store)
    damaged = _bytes(store)
    assert main(["metadata", "restore", "--pipeline-root", ran.root]) == 0
    assert _quick_check(store) == [("ok",)]
    assert _executions(store) == expected
    [aside] = [n for n in os.listdir(ran.root) if n.startswith("metadata.sqlite.damaged-")]
    assert _bytes(os.path.join(ran.root, aside)) == damaged
    assert os.path.exists(store + ".backup")

    result = run_pipeline(ran)
    assert result.exit_code == 0
    assert set(states(result).values()) == {"cached"}


def test_restore_moves_a_journal_of_the_damaged_file_aside_with_it(ran):
    """A journal left beside the store would be rolled back into the restored file."""
    store = store_path(ran.root)
    _replace_by_png(store)
    with open(store + "-journal", "wb") as f:
        f.write(b"\x01" + os.urandom(2047))  # a non-zero first byte: SQLite takes it for hot
    journal = _bytes(store + "-journal")
    aside = store_backup.restore_store(store)
    assert not os.path.exists(store + "-journal")
    assert _bytes(aside + "-journal") == journal
    assert open_store(ran.root).executions_of("example_gen")


def test_restore_puts_back_a_deleted_store(ran):
    store = store_path(ran.root)
    os.unlink(store)
    assert main(["metadata", "restore", "--pipeline-root", ran.root]) == 0
    assert set(states(run_pipeline(ran)).values()) == {"cached"}


def _refused(root, capsys, argv=()):
    before = _tree(root)
    capsys.readouterr()
    code = main(["metadata", "restore", "--pipeline-root", root, *argv])
    line = _one_error_line(capsys)
    after = _tree(root)
    after.pop(".pipeline.lock", None), before.pop(".pipeline.lock", None)
    assert after == before  # nothing changed
    return code, line


def test_restore_refused_without_a_backup(ran, capsys):
    store = store_path(ran.root)
    os.unlink(store + ".backup")
    _truncate_to_a_third(store)
    code, line = _refused(ran.root, capsys)
    assert code == 1
    assert line == (
        f"error: no backup of metadata store {store} at {store}.backup: nothing to restore "
        "(a backup is written after every completed run)"
    )


@pytest.mark.parametrize("damage", [_truncate_to_a_third, _replace_by_text, _zero_one_page])
def test_restore_refused_when_the_backup_is_damaged_too(ran, capsys, damage):
    store = store_path(ran.root)
    _truncate_to_a_third(store)
    damage(store + ".backup")
    code, line = _refused(ran.root, capsys)
    assert code == 1
    assert line.startswith(f"error: backup {store}.backup is damaged too (")
    assert line.endswith(f"); nothing restored, {store} left as it was")


def test_restore_refused_while_a_run_holds_the_lock(ran, capsys, monkeypatch):
    from pipeline import operations

    monkeypatch.setattr(operations, "RESTORE_LOCK_TIMEOUT_S", 0.2)
    _truncate_to_a_third(store_path(ran.root))
    with exclusive_lock(pipeline_lock_path(ran.root), 1.0):  # flock: a second open conflicts
        code, line = _refused(ran.root, capsys)
    assert code == 4
    assert "holds the lock on pipeline root" in line


def test_restore_refuses_to_replace_a_sound_store_unless_forced(ran, capsys):
    store = store_path(ran.root)
    code, line = _refused(ran.root, capsys)
    assert code == 1 and "passes its integrity check" in line and "--force" in line
    assert main(["metadata", "restore", "--pipeline-root", ran.root, "--force"]) == 0
    assert [n for n in os.listdir(ran.root) if n.startswith("metadata.sqlite.damaged-")]
    assert _quick_check(store) == [("ok",)]
