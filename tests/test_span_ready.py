"""data.span_ready_marker: a span is read only once its folder holds the ready marker (e.g.
`_SUCCESS`), on real digits, through span resolution, the CLI (cache included) and the report."""

import json
import logging
import os
import time

import pytest
from mnist_slices import write_mnist_slice

from components.example_gen import spans
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.core.errors import EXIT_DATA_GATE, ConfigError, InputDataError
from pipeline.report import build_report
from pipeline.report.compare_page import render_comparison

MARKER = "_SUCCESS"


def _span(root, number: int, ready: bool) -> str:
    """Writes span-`number` of real digits (distinct per span); its marker when `ready`."""
    folder = write_mnist_slice(str(root / f"span-{number}"), 48, 12, offset=48 * number)
    if ready:
        open(os.path.join(folder, MARKER), "w").close()
    return folder


# ------------------------------------------------------------------ span resolution


def test_without_a_marker_setting_a_span_being_copied_is_read_as_today(tmp_path):
    _span(tmp_path, 1, ready=True)
    newest = _span(tmp_path, 2, ready=False)
    assert spans.resolve_spans(str(tmp_path), None, 1) == [(2, newest)]
    assert spans.resolve_spans(str(tmp_path), None, 1, "") == [(2, newest)]


def test_the_newest_complete_span_is_read_and_the_other_one_logged(tmp_path, caplog):
    complete = _span(tmp_path, 1, ready=True)
    copying = _span(tmp_path, 2, ready=False)
    with caplog.at_level(logging.WARNING, logger=spans.__name__):
        assert spans.resolve_spans(str(tmp_path), None, 1, MARKER) == [(1, complete)]
    [line] = [r.getMessage() for r in caplog.records]
    assert copying in line and MARKER in line and "not ready" in line


def test_window_and_explicit_span_count_complete_spans_only(tmp_path):
    s1, s2 = _span(tmp_path, 1, ready=True), _span(tmp_path, 2, ready=False)
    s3 = _span(tmp_path, 3, ready=True)
    root = str(tmp_path)
    assert spans.resolve_spans(root, None, 2, MARKER) == [(1, s1), (3, s3)]
    assert spans.resolve_spans(root, 1, 1, MARKER) == [(1, s1)]
    with pytest.raises(InputDataError, match=rf"span 2 \(data.span\) is not ready: {s2} holds no {MARKER}"):
        spans.resolve_spans(root, 2, 1, MARKER)
    # Three spans exist but one is still being copied: not ready (exit 3), not a bad setting.
    with pytest.raises(InputDataError, match=r"3 spans requested .* only 2 of them are complete \(1, 3;"):
        spans.resolve_spans(root, None, 3, MARKER)
    # More spans than there are at all stays the config error it is without a marker.
    with pytest.raises(ConfigError, match=r"data\.window_spans: 4 spans requested .* has only 3 \(1, 2, 3\)"):
        spans.resolve_spans(root, None, 4, MARKER)
    with pytest.raises(ConfigError, match=r"data\.span: no span 7"):
        spans.resolve_spans(root, 7, 1, MARKER)


def test_no_complete_span_is_the_data_gates_error(tmp_path):
    _span(tmp_path, 1, ready=False)
    with pytest.raises(InputDataError, match=f"no complete span: no span-N/ folder holds {MARKER}") as e:
        spans.resolve_spans(str(tmp_path), None, 1, MARKER)
    assert e.value.exit_code == EXIT_DATA_GATE == 3


def test_a_flat_root_needs_the_marker_too(tmp_path):
    root = write_mnist_slice(str(tmp_path / "flat"), 24, 6)
    with pytest.raises(InputDataError, match=f"the flat data folder holds no {MARKER}"):
        spans.resolve_spans(root, None, 1, MARKER)
    open(os.path.join(root, MARKER), "w").close()
    assert spans.resolve_spans(root, None, 1, MARKER) == [(0, root)]


def test_the_fingerprint_changes_when_a_newer_span_becomes_complete(tmp_path):
    _span(tmp_path, 1, ready=True)
    _span(tmp_path, 2, ready=False)
    before = spans.raw_data_properties(str(tmp_path), None, 1, MARKER)
    open(tmp_path / "span-2" / MARKER, "w").close()
    after = spans.raw_data_properties(str(tmp_path), None, 1, MARKER)
    assert (before["spans"], after["spans"]) == ([1], [2])
    assert before["fingerprint"] != after["fingerprint"]


# ------------------------------------------------------------------ the config check


@pytest.mark.parametrize("value", ["a/_SUCCESS", "/abs/_SUCCESS", "..", ".", "a\\b", " _SUCCESS"])
def test_a_marker_that_is_not_a_plain_file_name_is_refused(tmp_path, value):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"data": {"span_ready_marker": value}}))
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    message = str(e.value)
    assert message.startswith("config key data.span_ready_marker: must be a plain file name")
    assert repr(value) in message and "\n" not in message


def test_a_plain_marker_and_off_are_accepted(tmp_path):
    assert load_config().data.span_ready_marker == ""
    path = tmp_path / "c.toml"
    path.write_text('[data]\nspan_ready_marker = "_SUCCESS"\n')
    assert load_config(str(path)).data.span_ready_marker == MARKER


# ------------------------------------------------------------------ through the CLI


def _example_gen(tmp_path, data_root, *extra, marker: str = MARKER) -> tuple:
    """Runs `run_local.py --to example_gen` in-process (`marker`: the ready marker, "" = off);
    returns (exit status, run summary)."""
    config = tmp_path / "ready.toml"
    config.write_text(f'[data]\nspan_ready_marker = "{marker}"\nnum_shards = 1\n')
    summary_path = str(tmp_path / f"summary-{time.monotonic_ns()}.json")
    code = main(
        [
            "--config",
            str(config),
            "--data-root",
            str(data_root),
            "--pipeline-root",
            str(tmp_path / "root"),
            "--to",
            "example_gen",
            "--summary-json",
            summary_path,
            *extra,
        ]
    )
    return code, json.load(open(summary_path)) if os.path.exists(summary_path) else None


def test_a_marker_landing_later_makes_the_next_run_read_the_new_span(tmp_path, capsys):
    data = tmp_path / "data"
    _span(data, 1, ready=True)
    copying = _span(data, 2, ready=False)

    code, first = _example_gen(tmp_path, data)
    assert code == 0, first and first.get("message")
    assert first["data"]["spans"] == [1] and first["data"]["layout"] == "spans"
    assert first["steps"]["example_gen"]["state"] == "ran"
    not_ready = [line for line in capsys.readouterr().err.splitlines() if "not ready" in line]
    assert len(not_ready) == 1 and copying in not_ready[0] and MARKER in not_ready[0]

    code, again = _example_gen(tmp_path, data)
    assert code == 0 and again["data"]["spans"] == [1]
    assert again["steps"]["example_gen"]["state"] == "cached"
    capsys.readouterr()

    open(os.path.join(copying, MARKER), "w").close()
    code, after = _example_gen(tmp_path, data)
    assert code == 0, after.get("message")
    assert after["data"]["spans"] == [2]
    assert after["steps"]["example_gen"]["state"] == "ran"
    assert after["steps"]["example_gen"]["properties"]["spans"] == [2]
    assert "not ready" not in capsys.readouterr().err

    header = open(after["report"], encoding="utf-8").read().split("</header>")[0]
    assert "spans 2" in header


def test_no_complete_span_or_an_unready_explicit_span_exits_3_with_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    _span(data, 1, ready=False)
    code, summary = _example_gen(tmp_path, data)
    assert code == EXIT_DATA_GATE
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no complete span" in errors[0] and MARKER in errors[0]
    assert summary["data"]["spans"] == []

    _span(data, 2, ready=True)
    code, _ = _example_gen(tmp_path, data, "--span", "1")
    assert code == EXIT_DATA_GATE
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "span 1 (data.span) is not ready" in errors[0]


def test_marker_off_a_flat_root_is_read_and_reported_as_a_flat_folder(tmp_path):
    root = write_mnist_slice(str(tmp_path / "flat"), 48, 12)
    code, summary = _example_gen(tmp_path, root, marker="")
    assert code == 0, summary and summary.get("message")
    assert summary["data"] == {"data_root": root, "spans": [0], "layout": "flat"}
    header = open(summary["report"], encoding="utf-8").read().split("</header>")[0]
    assert "flat data folder (no spans)" in header and "spans 0" not in header


# ------------------------------------------------------------------ the report header


def _summary(data: dict) -> dict:
    return {"run_id": "r1", "status": "completed", "exit_code": 0, "data": data, "steps": {}}


def test_the_report_header_names_what_the_run_read():
    flat = build_report(_summary({"data_root": "/d", "spans": [0], "layout": "flat"}))
    assert "flat data folder (no spans)" in flat and "spans 0" not in flat
    spanned = build_report(_summary({"data_root": "/d", "spans": [3, 4], "layout": "spans"}))
    assert "spans 3, 4" in spanned and "flat data folder" not in spanned
    unresolved = build_report(_summary({"data_root": "/d", "spans": []}))
    assert "spans -" in unresolved
    comparison = {"alpha": 0.05, "data": {"data_root": "/d", "spans": [0], "layout": "flat"}, "models": []}
    assert "flat data folder (no spans)" in render_comparison(comparison)
