"""The run report: a real small run writes runs/<id>/report.html, self-contained, with every
section; the report only reads artifacts (the evaluator wrote the confusion matrix and the
mistakes), so any report, a no-op rerun's too, builds fast without TensorFlow; headless
Chromium renders it with its images and without any network request."""

import base64
import copy
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser

import pytest
from mnist_slices import write_mnist_slice
from PIL import Image

from pipeline.cli import main
from pipeline.formats import evaluation as evaluation_format
from pipeline.formats.model import SERVING_SUBDIR
from pipeline.report import build_report, write_report
from pipeline.report.collect import collect
from pipeline.report.images import png_data_uri
from pipeline.report.svg import Series, bar_chart, line_chart, nice_ticks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
SECTIONS = ("steps", "data", "anomalies", "training", "metrics", "confusion", "gallery", "blessing", "push")

# 150 steps: this tiny network then scores 0.61 to 0.77 on the 200 test digits (3 runs), well
# clear of the 0.3 floor; at 60 steps it scored 0.25 to 0.52 and the run was sometimes refused.
CONFIG = """
[trainer]
train_steps = 150
batch_size = 32
eval_every_steps = 75
early_stopping_evals = 0
conv1_filters = 4
conv2_filters = 8
dense_units = 32

[evaluator]
accuracy_floor = 0.3
promotion_policy = "non_inferiority"
non_inferiority_margin = 1.0
slice_accuracy_floor = 0.0
slice_max_regression = 1.0
"""


class _Page(HTMLParser):
    """Collects tags with their attributes, element ids and the text of a parsed page."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.ids, self.text = [], set(), []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self.ids.add(attrs["id"])

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag):
        return [attrs for name, attrs in self.tags if name == tag]


def _run(ws, name, *extra):
    summary_json = str(ws["base"] / f"{name}.json")
    code = main(
        [
            "--config",
            ws["config"],
            "--data-root",
            ws["data"],
            "--pipeline-root",
            ws["root"],
            "--summary-json",
            summary_json,
            *extra,
        ]
    )
    with open(summary_json) as f:
        return code, json.load(f)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A real run on 1,000 / 200 digits with a tiny model, then a no-op rerun."""
    base = tmp_path_factory.mktemp("report")
    ws = {
        "base": base,
        "data": write_mnist_slice(str(base / "data"), 1000, 200),
        "root": str(base / "root"),
        "config": str(base / "config.toml"),
    }
    with open(ws["config"], "w") as f:
        f.write(CONFIG)
    code, ws["first"] = _run(ws, "first")
    assert code == 0, ws["first"]["message"]
    code, ws["noop"] = _run(ws, "noop")
    assert code == 0, ws["noop"]["message"]
    return ws


def _html(summary) -> str:
    with open(summary["report"], encoding="utf-8") as f:
        return f.read()


def test_report_is_written_next_to_the_summary_and_named_in_it(ws):
    first = ws["first"]
    run_dir = os.path.join(ws["root"], "runs", first["run_id"])
    assert first["report"] == os.path.join(run_dir, "report.html") and os.path.isfile(first["report"])
    with open(os.path.join(run_dir, "summary.json")) as f:
        assert json.load(f)["report"] == first["report"]


def test_report_has_every_section_and_is_self_contained(ws):
    html = _html(ws["first"])
    page = _Page(html)
    assert set(SECTIONS) <= page.ids
    assert not page.all("script") and not page.all("link") and not page.all("iframe")
    csp = [m for m in page.all("meta") if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"]
    for tag, attrs in page.tags:
        for attr in ("src", "href", "srcset", "action", "poster", "data"):
            if attr in attrs:
                assert attrs[attr].startswith(("data:image/png;base64,", "#")), (tag, attrs[attr][:60])
    # The SVG namespace is the only URL in the document (an identifier, never fetched).
    assert set(re.findall(r"(?:https?|ftp|wss?)://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    assert "url(" not in html and "@import" not in html


def test_report_shows_the_run_statistics_training_and_decision(ws):
    first, html = ws["first"], _html(ws["first"])
    page = _Page(html)
    text = " ".join(page.text)
    assert first["run_id"] in text and "completed (exit 0)" in text
    assert all(f"{name}" in text for name in first["steps"])
    assert len(page.all("svg")) >= 4  # label distribution, eval accuracy, eval loss, accuracy per slice
    assert len(page.all("polyline")) == 2
    assert "Label distribution per split" in text and "eval accuracy per training step" in text
    assert all(f"label={d}" in text for d in range(10))
    assert "no anomalies in splits train, eval, test" in text
    assert "BLESSED" in text and "accuracy_floor" in text
    assert f"version {first['push']['version']}" in text


def test_confusion_matrix_and_gallery_agree_with_the_evaluation(ws):
    first = ws["first"]
    analysis = collect(first)["analysis"]
    assert not analysis["problems"], analysis["problems"]
    matrix = analysis["confusion"]["candidate"]["matrix"]
    total = sum(map(sum, matrix))
    correct = sum(matrix[k][k] for k in range(10))
    evaluation = first["evaluation"]["metrics"]["candidate"]["overall"]
    assert total == evaluation["example_count"] == 200
    assert abs(correct / total - evaluation["accuracy"]) < 1e-6
    gallery = analysis["gallery"]
    # The gallery's own predictions agree with TFMA's confusion matrix.
    assert gallery["scanned"] == 200 and gallery["misclassified"] == total - correct > 0
    items = gallery["items"]
    assert len(items) == min(48, gallery["misclassified"])
    assert [i["confidence"] for i in items] == sorted((i["confidence"] for i in items), reverse=True)
    for item in items:
        assert item["label"] != item["predicted"] and matrix[item["label"]][item["predicted"]] > 0
        image = Image.open(io.BytesIO(base64.b64decode(item["png"].split(",", 1)[1])))
        assert image.size == (28, 28) and image.mode == "L"
    page = _Page(_html(first))
    assert len(page.all("img")) == len(items)
    assert len(page.all("table")) and any(t.get("class") == "confusion" for t in page.all("table"))
    # The report shows what the evaluation artifact holds, nothing computed on its own.
    uri = first["steps"]["evaluator"]["outputs"]["evaluation"]
    assert analysis["confusion"] == evaluation_format.read_confusion_matrices(uri)
    mistakes = evaluation_format.read_mistakes(uri)
    assert [(i["label"], i["predicted"], i["confidence"]) for i in mistakes["items"]] == [
        (i["label"], i["predicted"], i["confidence"]) for i in items
    ]
    assert [i["png"] for i in items] == [png_data_uri(i["pixels"]) for i in mistakes["items"]]
    assert len(evaluation_format.read_outcomes(uri)["candidate_correct"]) == total


def test_noop_rerun_shows_the_analysis_of_the_cached_evaluation(ws):
    noop = ws["noop"]
    assert noop["steps"]["evaluator"]["state"] == "cached"
    assert (
        noop["steps"]["evaluator"]["outputs"]["evaluation"]
        == ws["first"]["steps"]["evaluator"]["outputs"]["evaluation"]
    )
    assert noop["report"] != ws["first"]["report"] and os.path.isfile(noop["report"])
    html = _html(noop)
    assert "evaluator was cached: shown are the outputs of the earlier execution it reused" in html
    assert len(_Page(html).all("img")) == len(_Page(_html(ws["first"])).all("img")) > 0
    assert not os.path.exists(os.path.join(ws["root"], "report_cache"))  # no cache of its own


def test_noop_report_is_fast_and_loads_no_tensorflow(ws):
    script = (
        "import json, sys, time\n"
        "from pipeline.report import write_report\n"
        f"summary = json.load(open({ws['noop']['report'].replace('report.html', 'summary.json')!r}))\n"
        "started = time.monotonic()\n"
        f"write_report(summary, {str(ws['base'] / 'fast')!r})\n"
        "print(time.monotonic() - started, 'tensorflow' in sys.modules,\n"
        "      'tensorflow_model_analysis' in sys.modules)\n"
    )
    os.makedirs(ws["base"] / "fast")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    seconds, tf_loaded, tfma_loaded = out.stdout.split()
    assert tf_loaded == "False" and tfma_loaded == "False"
    assert float(seconds) < 2.0, seconds
    fast = (ws["base"] / "fast" / "report.html").read_text()
    assert len(_Page(fast).all("img")) == len(_Page(_html(ws["noop"])).all("img")) > 0


def test_a_noop_rerun_as_its_own_process_loads_no_tensorflow(ws):
    """Every step cached: the pusher still runs (it re-checks what serves) but publishes
    nothing, so nothing in the run may import TensorFlow (seconds of start-up)."""
    script = (
        "import sys\n"
        "from pipeline.cli import main\n"
        f"code = main(['--config', {ws['config']!r}, '--data-root', {ws['data']!r}, "
        f"'--pipeline-root', {ws['root']!r}, '--summary-json', {str(ws['base'] / 'noop2.json')!r}])\n"
        "print(code, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["0", "False"], out.stdout[-2000:]
    summary = json.loads((ws["base"] / "noop2.json").read_text())
    assert {name: step["state"] for name, step in summary["steps"].items()} == {
        **{name: "cached" for name in summary["steps"] if name != "pusher"},
        "pusher": "ran",
    }
    assert summary["push"]["pushed"] == 0


def test_report_command_rebuilds_without_tensorflow(ws):
    script = (
        "import sys\n"
        "from pipeline.report import rebuild_report\n"
        f"print(rebuild_report({ws['root']!r}, {ws['first']['run_id']!r}))\n"
        "print('tensorflow' in sys.modules, 'tensorflow_model_analysis' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    path, loaded = out.stdout.strip().splitlines()
    assert path == ws["first"]["report"] and loaded == "False False"
    assert len(_Page(_html(ws["first"])).all("img")) > 0


def _with_evaluation_copy(ws, tmp_path, keep=lambda name: True) -> dict:
    """The first run's summary, its evaluator output replaced by a copy of the evaluation
    artifact holding only the files `keep` accepts."""
    source = ws["first"]["steps"]["evaluator"]["outputs"]["evaluation"]
    target = tmp_path / "evaluation"
    target.mkdir()
    for name in os.listdir(source):
        if keep(name):
            shutil.copy(os.path.join(source, name), target / name)
    summary = copy.deepcopy(ws["first"])
    summary["steps"]["evaluator"]["outputs"]["evaluation"] = str(target)
    return summary


def test_evaluation_without_per_example_files_says_so_and_report_command_works(ws, tmp_path, capsys):
    # An evaluation made by an older evaluator: TFMA's output only.
    summary = _with_evaluation_copy(
        ws, tmp_path, lambda name: name not in evaluation_format.PER_EXAMPLE_FILES
    )
    html = build_report(summary)
    text = " ".join(_Page(html).text)
    assert "this evaluation predates per-example outputs" in text and "rerun the evaluator" in text
    assert "<img" not in html and 'class="confusion"' not in html
    assert set(SECTIONS) <= _Page(html).ids
    assert main(["report", "--pipeline-root", ws["root"], ws["noop"]["run_id"]]) == 0
    assert capsys.readouterr().out.strip() == ws["noop"]["report"]
    assert len(_Page(_html(ws["noop"])).all("img")) > 0
    assert main(["report", "--pipeline-root", ws["root"], "../etc"]) == 2
    assert main(["report", "--pipeline-root", ws["root"], "no-such-run"]) == 2


def test_damaged_evaluation_file_is_a_problem_naming_it(ws, tmp_path):
    summary = _with_evaluation_copy(ws, tmp_path)
    path = tmp_path / "evaluation" / evaluation_format.MISTAKES_FILE
    path.write_text('{"scanned": 1')
    section = collect(summary)["analysis"]
    assert section["gallery"] is None and section["confusion"]  # the other file still shows
    assert len(section["problems"]) == 1 and str(path) in section["problems"][0]
    assert "not valid JSON" in section["problems"][0]
    html = build_report(summary)
    assert "<img" not in html and 'class="confusion"' in html


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_report_failure_is_one_warning_and_keeps_the_exit_code(ws, monkeypatch):
    import pipeline.report

    def broken(summary, run_dir):
        raise OSError("disk full")

    monkeypatch.setattr(pipeline.report, "write_report", broken)
    # The CLI reconfigures the root logger; a handler on the runner's logger survives that.
    handler = _Records()
    logging.getLogger("pipeline").addHandler(handler)
    try:
        code, summary = _run(ws, "broken-report")
    finally:
        logging.getLogger("pipeline").removeHandler(handler)
    assert code == 0 and summary["status"] == "completed" and "report" not in summary
    warnings = [r.getMessage() for r in handler.records if r.levelno >= logging.WARNING]
    assert warnings == ["run report not written: disk full"]


def test_report_never_reads_the_model_even_a_tampered_one(ws):
    expected = collect(ws["first"])["analysis"]
    model_dir = os.path.join(ws["first"]["steps"]["trainer"]["outputs"]["model"], SERVING_SUBDIR)
    variables = os.path.join(model_dir, "variables")
    path = os.path.join(
        variables, sorted(n for n in os.listdir(variables) if n.startswith("variables.data"))[0]
    )
    with open(path, "r+b") as f:
        original = f.read(1)
        f.seek(0)
        f.write(bytes([original[0] ^ 0xFF]))
    try:
        html = build_report(ws["first"])
        analysis = collect(ws["first"])["analysis"]
    finally:
        with open(path, "r+b") as f:
            f.write(original)
    # The gallery comes from the evaluation artifact: the model's files are never opened.
    assert "digest" not in " ".join(analysis["problems"]) and not analysis["problems"]
    assert analysis["gallery"] == expected["gallery"] and analysis["confusion"] == expected["confusion"]
    assert html.count("<img") == len(expected["gallery"]["items"]) > 0


def test_failed_and_skipped_steps_are_explained_and_text_is_escaped(tmp_path):
    summary = {
        "run_id": "r<1>",
        "status": "failed",
        "exit_code": 3,
        "pipeline_root": str(tmp_path),
        "message": "example_gen failed: <script>alert(1)</script>",
        "data": {"spans": [2], "data_root": "/d"},
        "steps": {
            "example_gen": {"state": "failed", "error": "x.gz: <b>bad</b> header", "seconds": 0.1},
            **{
                s: {"state": "skipped", "reason": "an earlier step failed or stopped the run"}
                for s in (
                    "statistics_gen",
                    "schema_gen",
                    "example_validator",
                    "trainer",
                    "evaluator",
                    "pusher",
                )
            },
        },
        "push": {"pushed": 0, "version": 0, "reason": "an earlier step failed or stopped the run"},
    }
    html = write_report(summary, str(tmp_path))
    with open(html, encoding="utf-8") as f:
        text = f.read()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;b&gt;bad&lt;/b&gt;" in text and "MNIST run r&lt;1&gt;" in text
    assert "trainer was skipped (an earlier step failed or stopped the run); nothing to show" in text
    assert set(SECTIONS) <= _Page(text).ids


def test_report_of_a_pipeline_with_other_steps_renders_notes(tmp_path):
    html = build_report(
        {
            "run_id": "x",
            "status": "completed",
            "exit_code": 0,
            "pipeline_root": str(tmp_path),
            "steps": {"a": {"state": "ran", "outputs": {}, "seconds": 0.0}},
        }
    )
    assert "step trainer is not part of this pipeline" in html


def test_svg_charts_and_images_refuse_bad_input():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.85, 1.0)[0] >= 0.85
    svg = line_chart([Series("a", [(1, 0.5), (2, None), (3, float("nan")), (4, 0.7)])], "t<", "x", "y")
    assert svg.count("<circle") == 2 and "t&lt;" in svg
    with pytest.raises(ValueError, match="no finite data points"):
        line_chart([Series("a", [(1, None)])], "t", "x", "y")
    with pytest.raises(ValueError, match="has 1 values for 2 categories"):
        bar_chart(["a", "b"], [Series("s", values=[1.0])], "t", "x", "y")
    assert bar_chart(["a", "b"], [Series("s", values=[1.0, None])], "t", "x", "y").count("<rect") == 1
    with pytest.raises(ValueError, match="784 pixels"):
        png_data_uri([0] * 10)
    with pytest.raises(ValueError, match="non-finite"):
        png_data_uri([float("nan")] * 784)


# ---- headless Chromium ------------------------------------------------------------------------
def _need_chromium():
    if os.path.exists(CHROMIUM):
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI: install it with `apt-get install -y chromium`")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium); the static checks still ran")


def _chromium(tmp_path, url: str, *args) -> tuple:
    """Runs headless Chromium on `url`; returns (stdout, URLs the page itself requested)."""
    profile, netlog = (
        tmp_path / f"profile-{time.monotonic_ns()}",
        tmp_path / f"netlog-{time.monotonic_ns()}.json",
    )
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--log-net-log={netlog}",
        *args,
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout, _page_requests(netlog)


def _page_requests(netlog) -> list:
    """Network requests made on behalf of a file:// page (the browser's own, e.g. its update
    checks, belong to no page and are left out)."""
    text = netlog.read_text()
    try:
        log = json.loads(text)
    except ValueError:  # a log cut short: close the events list
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        e["params"]["url"]
        for e in log["events"]
        if e.get("type") == start_job
        and "file://" in str(e.get("params", {}).get("network_isolation_key"))
        and not e["params"]["url"].startswith(("file:", "data:"))
    ]


def test_chromium_renders_sections_and_images_without_network(ws, tmp_path):
    _need_chromium()
    report = ws["first"]["report"]
    # Control: the detector does see a page's request when there is one (no CSP here).
    probe = tmp_path / "probe.html"
    probe.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/probe.png"></body></html>')
    _, requests = _chromium(tmp_path, probe.as_uri(), "--dump-dom")
    assert requests == ["http://127.0.0.1:9/probe.png"]

    dom, requests = _chromium(tmp_path, "file://" + report, "--dump-dom")
    assert requests == []
    page = _Page(dom)
    assert set(SECTIONS) <= page.ids
    images = page.all("img")
    assert len(images) == len(collect(ws["first"])["analysis"]["gallery"]["items"]) > 0
    assert all(i["src"].startswith("data:image/png;base64,") for i in images)
    assert len(page.all("svg")) >= 4

    # The page's Content-Security-Policy blocks a request even if one slipped into the HTML.
    leaky = tmp_path / "leaky.html"
    leaky.write_text(_html(ws["first"]).replace("<main>", '<main><img src="http://127.0.0.1:9/leak.png">', 1))
    _, requests = _chromium(tmp_path, leaky.as_uri(), "--dump-dom")
    assert requests == []

    shot = tmp_path / "report.png"
    _chromium(
        tmp_path, "file://" + report, f"--screenshot={shot}", "--window-size=1280,3000", "--hide-scrollbars"
    )
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 3000)
    assert len(set(image.resize((64, 150)).get_flattened_data())) > 20  # rendered content, not a blank page
    shutil.copy(shot, ws["base"] / "report-screenshot.png")


def _comparison(slice_name, difference, low, high, candidate_only, baseline_only, p_value, alpha=0.05):
    return {
        "slice": slice_name,
        "n": 1000,
        "candidate_only": candidate_only,
        "baseline_only": baseline_only,
        "candidate_accuracy": 0.99,
        "baseline_accuracy": None if difference is None else 0.99 - difference,
        "candidate_ci": [0.98, 0.995],
        "baseline_ci": [0.98, 0.995],
        "difference": difference,
        "difference_ci": [low, high],
        "p_value": p_value,
        "alpha": alpha,
    }


def test_the_blessing_section_shows_the_paired_comparison_and_one_actionable_sentence():
    from pipeline.report.sections_model import blessing_html, verdict_sentence
    from pipeline.report.svg import interval_chart

    reason = (
        "overall accuracy +0.0003 (95% CI -0.0011 to +0.0017, McNemar p = 0.66): not better "
        "than the serving model by more than min_gain 0.0000 under superiority"
    )
    decision = {
        "blessed": False,
        "reasons": [reason],
        "policy": "superiority",
        "alpha": 0.05,
        "margin": 0.002,
        "thresholds": {"min_gain": 0.0},
        "checks": [
            {
                "name": "superiority",
                "slice": "overall",
                "value": 0.0003,
                "threshold": 0.0,
                "passed": False,
                "reason": reason,
            }
        ],
        "comparisons": [
            _comparison("label=3", -0.002, -0.009, 0.004, 1, 3, 0.62, 0.005),
            _comparison("overall", 0.0003, -0.0011, 0.0017, 12, 9, 0.66),
            _comparison("label=7", None, None, None, 0, 0, None),
        ],
    }
    sentence = verdict_sentence(decision)
    assert sentence.startswith("Not pushed, the serving model stays: overall accuracy +0.0003 (95% CI")
    assert "No action needed" in sentence
    html = blessing_html({"decision": decision})
    page = _Page(html)
    assert sentence in "".join(page.text)
    assert "Candidate vs the serving model" in html and html.count("<svg") == 1
    assert html.index(">overall<") < html.index(">label=3<")  # overall first, then the slices
    assert "not computable" in html  # a non-finite slice is listed, never drawn as zero
    assert "-0.0011 to 0.0017" in html or "-0.0011 to +0.0017" in html
    for cells in (">12<", ">9<", ">0.66<"):
        assert cells in html
    assert "min_gain" in html  # the threshold line of the chart

    blessed = {
        **decision,
        "blessed": True,
        "checks": [{"name": "superiority", "passed": True, "reason": "overall accuracy +0.0040 ..."}],
    }
    assert verdict_sentence(blessed).startswith("Passed the gate: overall accuracy +0.0040")
    first = {"blessed": True, "policy": None, "checks": []}
    assert "no other serving model" in verdict_sentence(first)
    assert "Candidate vs the serving model" in blessing_html({"decision": {**decision, "thresholds": None}})
    closed = {
        "blessed": False,
        "policy": "superiority",
        "checks": [{"name": "paired_outcomes", "passed": False, "reason": "no paired outcomes"}],
    }
    assert "could not compare" in verdict_sentence(closed)
    regress = {
        "blessed": False,
        "policy": "superiority",
        "checks": [{"name": "slice_max_regression", "passed": False, "reason": "slice label=3 ..."}],
    }
    assert "that digit" in verdict_sentence(regress)
    with pytest.raises(ValueError, match="no finite intervals"):
        interval_chart([("a", None, None, None)], "t", "x")
