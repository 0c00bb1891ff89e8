"""HTML of the report's model sections: training curves, metrics per slice, confusion matrix,
misclassified digits, blessing decision and push outcome.

Each function takes its part of `collect()`'s result and returns an HTML fragment; all text
is escaped.
"""

from __future__ import annotations

import math
import re

from pipeline.formats import examples as examples_format
from pipeline.report.markup import Raw, badge, esc, fmt, is_number, note, table, tag
from pipeline.report.sections_data import notes
from pipeline.report.svg import Series, bar_chart, interval_chart, line_chart

NUM_CLASSES = examples_format.NUM_CLASSES
_SLICE = re.compile(r"^([A-Za-z_]+)=(-?\d+)$")


# ---- training -------------------------------------------------------------------------------
def training_html(section: dict) -> str:
    """The model module, eval accuracy and loss per step as line charts, and the training facts."""
    parts = [notes(section.get("note"), problems=section.get("problems") or [])]
    module = section.get("module") or {}
    if module.get("path"):
        parts.append(
            tag(
                "p",
                "model module: "
                + tag("code", esc(module["path"]), title=module.get("sha256"))
                + esc(
                    f" ({module.get('entry_point') or 'entry point not recorded'}, sha256 "
                    f"{str(module.get('sha256'))[:12]}...)"
                ),
                cls="module",
            )
        )
    history = section.get("history")
    if history:
        evaluations = [e for e in history.get("evaluations") or [] if isinstance(e, dict)]
        charts = []
        for metric, label in (("accuracy", "eval accuracy"), ("loss", "eval loss")):
            points = [(e.get("step"), e.get(metric)) for e in evaluations]
            if any(is_number(x) and is_number(y) for x, y in points):
                charts.append(
                    line_chart([Series(label, points)], f"{label} per training step", "training step", label)
                )
        parts.append(
            tag("div", "".join(charts), cls="charts")
            if charts
            else note("training history holds no evaluation", "warn")
        )
    props = section.get("properties") or (history or {})
    facts = [
        ("steps trained", props.get("steps_trained")),
        ("exported: eval accuracy", props.get("best_eval_accuracy")),
        ("exported: eval loss", props.get("best_eval_loss")),
        ("exported: step", props.get("best_eval_step")),
        ("highest eval accuracy", props.get("top_eval_accuracy")),
        ("at step", props.get("top_eval_step")),
        ("final eval accuracy", props.get("final_eval_accuracy")),
        ("evaluations", props.get("evaluations_run")),
        ("stopped early", props.get("stopped_early")),
        ("warm started", props.get("warm_started")),
        ("training examples/s", props.get("train_examples_per_sec")),
        ("training seconds", props.get("train_seconds")),
    ]
    if any(v is not None for _, v in facts):
        parts.append(table(["fact", "value"], [[k, v] for k, v in facts if v is not None], cls="grid facts"))
    return "".join(parts)


# ---- metrics per slice ------------------------------------------------------------------------
def slice_sort_key(name: str) -> tuple:
    """overall first, then label slices, then other feature slices, each by numeric value."""
    if name == "overall":
        return (0, "", 0, name)
    match = _SLICE.match(name)
    if match:
        return (1 if match.group(1) == "label" else 2, match.group(1), int(match.group(2)), name)
    return (3, "", 0, name)


def _short(name: str) -> str:
    if name == "overall":
        return "all"
    match = _SLICE.match(name)
    if not match:
        return name
    feature, value = match.groups()
    return value if feature == "label" else f"{'ink' if feature == 'ink_density_bucket' else feature}{value}"


def _metric(metrics, slice_name: str, name: str):
    value = ((metrics or {}).get(slice_name) or {}).get(name)
    return value if is_number(value) else None


def _accuracy_floor(values) -> float:
    low = min(values)
    return max(0.0, math.floor((low - 0.02) * 20) / 20)


def metrics_html(section: dict) -> str:
    """Per-slice accuracy and log loss of candidate and baseline: a table and a bar chart,
    plus per-class precision and recall on the overall slice."""
    parts = [notes(section.get("note"), problems=section.get("problems") or [])]
    decision = section.get("decision") or {}
    metrics = decision.get("metrics") or (section.get("summary") or {}).get("metrics") or {}
    candidate, baseline = metrics.get("candidate") or {}, metrics.get("baseline")
    if not candidate:
        return "".join(parts) + (note("no evaluation metrics in this run") if not section.get("note") else "")
    examples = decision.get("examples") or {}
    baseline_model = decision.get("baseline_model")
    parts.append(
        tag(
            "p",
            esc(
                f"evaluated on {examples.get('evaluated', '?')} examples of the {examples.get('split', 'test')} split; "
                + (
                    f"baseline: model id {baseline_model.get('id')} (serving when evaluated)"
                    if baseline_model
                    else "no baseline (nothing was serving, or the candidate is the serving model)"
                )
            ),
        )
    )
    slices = sorted(set(candidate) | set(baseline or {}), key=slice_sort_key)
    rows = []
    for name in slices:
        cand, base = _metric(candidate, name, "accuracy"), _metric(baseline, name, "accuracy")
        count = _metric(candidate, name, "example_count")
        rows.append(
            [
                name,
                int(count) if count is not None else None,
                cand,
                base,
                cand - base if cand is not None and base is not None else None,
                _metric(candidate, name, "log_loss"),
                _metric(baseline, name, "log_loss"),
            ]
        )
    parts.append(
        table(
            [
                "slice",
                "examples",
                "candidate accuracy",
                "baseline accuracy",
                "difference",
                "candidate log loss",
                "baseline log loss",
            ],
            rows,
        )
    )
    series = [Series("candidate", values=[_metric(candidate, s, "accuracy") for s in slices])]
    if baseline:
        series.append(Series("baseline", values=[_metric(baseline, s, "accuracy") for s in slices]))
    values = [v for s in series for v in s.values if v is not None]
    if values:
        floor = _accuracy_floor(values)
        parts.append(
            tag(
                "div",
                bar_chart(
                    [_short(s) for s in slices],
                    series,
                    f"Accuracy per slice (axis from {floor:.2f})",
                    "slice (all, digit, ink density bucket)",
                    "accuracy",
                    y_range=(floor, 1.0),
                ),
                cls="charts",
            )
        )
    overall = candidate.get("overall") or {}
    if any(f"precision_class_{k}_top_1" in overall for k in range(NUM_CLASSES)):
        base_overall = (baseline or {}).get("overall") or {}
        per_class = [
            [
                k,
                overall.get(f"precision_class_{k}_top_1"),
                overall.get(f"recall_class_{k}_top_1"),
                base_overall.get(f"precision_class_{k}_top_1"),
                base_overall.get(f"recall_class_{k}_top_1"),
            ]
            for k in range(NUM_CLASSES)
        ]
        parts.append(
            tag(
                "details",
                tag("summary", "precision and recall per digit")
                + table(
                    [
                        "digit",
                        "candidate precision",
                        "candidate recall",
                        "baseline precision",
                        "baseline recall",
                    ],
                    per_class,
                ),
            )
        )
    return "".join(parts)


# ---- confusion matrix and gallery ---------------------------------------------------------------
def _cell_style(count: int, row_total: int, diagonal: bool) -> str:
    share = count / row_total if row_total else 0.0
    if diagonal:
        return f"background: rgba(0,158,115,{0.15 + 0.85 * share:.3f})"
    alpha = min(1.0, share * 5) if count else 0.0
    return f"background: rgba(213,94,0,{alpha:.3f})" if count else ""


def confusion_table(name: str, matrix) -> str:
    """One model's confusion matrix (rows: true digit, columns: predicted) as a coloured table.

    Diagonal cells are green by the row's share correct; other cells red by the share of the
    row's digits mistaken for that column (fully red from 20%).
    """
    head = (
        tag("th", "true \\ predicted")
        + "".join(tag("th", str(k)) for k in range(NUM_CLASSES))
        + tag("th", "total")
        + tag("th", "recall")
    )
    rows = []
    for actual, row in enumerate(matrix):
        total = int(sum(row))
        cells = []
        for predicted, count in enumerate(row):
            count = int(count)
            title = f"true {actual}, predicted {predicted}: {count}" + (
                f" ({100.0 * count / total:.1f}% of the {total} {actual}s)" if total else ""
            )
            cells.append(
                tag(
                    "td",
                    esc(count) if count else "",
                    cls="cm",
                    style=_cell_style(count, total, actual == predicted),
                    title=title,
                )
            )
        recall = row[actual] / total if total else None
        rows.append(
            tag(
                "tr",
                tag("th", str(actual))
                + "".join(cells)
                + tag("td", esc(total), cls="num")
                + tag("td", esc(fmt(recall)), cls="num"),
            )
        )
    correct = sum(int(matrix[k][k]) for k in range(len(matrix)))
    total = sum(int(sum(r)) for r in matrix)
    caption = f"{name}: {correct} of {total} correct" + (
        f" ({100.0 * correct / total:.2f}%)" if total else ""
    )
    return tag(
        "table",
        tag("caption", esc(caption)) + tag("thead", tag("tr", head)) + tag("tbody", "".join(rows)),
        cls="confusion",
    )


def confusion_html(section: dict) -> str:
    """The confusion matrices TFMA computed (candidate, and baseline when compared), as the
    evaluator wrote them; or why they are missing (an evaluation from before it wrote them)."""
    confusion = section.get("confusion")
    if not confusion:
        return notes(section.get("note"), section.get("skipped"), problems=section.get("problems") or [])
    parts = [notes(section.get("note"))]
    order = sorted(confusion, key=lambda m: (m != "candidate", m))
    parts.append(tag("div", "".join(confusion_table(m, confusion[m]["matrix"]) for m in order), cls="charts"))
    return "".join(parts)


def gallery_html(section: dict) -> str:
    """The most confident mistakes of the candidate on the test split, as images (PNG data URIs
    made by `collect` from the pixels the evaluator kept)."""
    gallery = section.get("gallery")
    if not gallery:
        return ""  # confusion_html already said why the analysis is missing
    parts = [
        tag(
            "p",
            esc(
                f"{gallery['misclassified']} of {gallery['scanned']} test digits misclassified by the candidate"
                + (f"; the {len(gallery['items'])} most confident mistakes" if gallery["items"] else "")
                + ". Caption: true -> predicted (confidence of the prediction)."
            ),
        )
    ]
    figures = []
    for item in gallery["items"]:
        png = item.get("png", "")
        if not isinstance(png, str) or not png.startswith("data:image/png;base64,"):
            continue  # only embedded images, never a link
        alt = f"true {item['label']}, predicted {item['predicted']} ({item['confidence']:.3f})"
        figures.append(
            tag(
                "figure",
                f'<img src="{esc(png)}" width="56" height="56" alt="{esc(alt)}" '
                f'title="{esc(alt)}; p(true)={item.get("label_probability", 0):.3f}">'
                + tag(
                    "figcaption",
                    esc(f"{item['label']} -> {item['predicted']}")
                    + "<br>"
                    + esc(f"{item['confidence']:.3f}"),
                ),
                cls="digit",
            )
        )
    if figures:
        parts.append(tag("div", "".join(figures), cls="gallery"))
    return "".join(parts)


# ---- blessing and push ------------------------------------------------------------------------
def blessing_html(section: dict) -> str:
    """The gate's verdict, thresholds and every check with its result."""
    decision = section.get("decision")
    summary = section.get("summary") or {}
    if not decision and not summary:
        return notes(section.get("note"))
    source = decision or summary
    blessed = source.get("blessed")
    verdict = badge("BLESSED", "ok") if blessed in (1, True) else badge("NOT BLESSED", "bad")
    parts = [
        notes(section.get("note")),
        tag(
            "p",
            "decision: "
            + verdict
            + (esc(f" (marker file: {decision['marker']})") if decision and decision.get("marker") else ""),
        ),
    ]
    if decision:
        parts.append(tag("p", tag("strong", esc(verdict_sentence(decision))), cls="verdict"))
    for reason in source.get("reasons") or []:
        parts.append(note(reason, "error"))
    if decision:
        parts.append(comparison_html(decision))
    thresholds = (decision or {}).get("thresholds")
    if thresholds:
        parts.append(
            table(
                ["threshold", "value"],
                [[k, v if v is not None else "not set"] for k, v in thresholds.items()],
                cls="grid facts",
            )
        )
    checks = source.get("checks") or []
    if checks:
        parts.append(
            table(
                ["check", "slice", "value", "threshold", "result", "reason"],
                [
                    [
                        c.get("name"),
                        c.get("slice"),
                        c.get("value"),
                        c.get("threshold"),
                        Raw(badge("pass", "ok") if c.get("passed") else badge("fail", "bad")),
                        c.get("reason"),
                    ]
                    for c in checks
                ],
                row_classes=[None if c.get("passed") else "bad" for c in checks],
            )
        )
    return "".join(parts)


def verdict_sentence(decision: dict) -> str:
    """One sentence a person on call can act on: what the gate decided against the serving
    model, on which evidence, and what to do about it."""
    checks = decision.get("checks") or []
    failed = [c for c in checks if not c.get("passed")]
    policy = decision.get("policy")
    if decision.get("blessed") in (1, True):
        if policy is None:
            return (
                "Passed the gate on its absolute floors: there was no other serving model to "
                "compare with (a first run, or this model is the one serving). The push "
                "section says whether it was published."
            )
        policy_check = next((c for c in checks if c.get("name") == policy), {})
        return (
            f"Passed the gate: {policy_check.get('reason', 'every check passed')}. The push "
            "section says whether it was published."
        )
    if not failed:
        return "Not pushed: the gate recorded no passing decision. Treat as a failure and rerun."
    first = failed[0]
    name = first.get("name")
    if name == "paired_outcomes":
        return (
            f"Not pushed, the gate could not compare the models: {first.get('reason')}. "
            "The serving model stays; rerun the evaluator, and report a bug if it persists."
        )
    if name == policy:
        return (
            f"Not pushed, the serving model stays: {first.get('reason')}. No action needed "
            "unless an improvement was expected (then train longer or add data)."
        )
    if name == "slice_max_regression":
        return (
            f"Not pushed, the serving model stays: {first.get('reason')}. Look at the new "
            "training data for that digit before retrying."
        )
    return (
        f"Not pushed, the serving model stays: {first.get('reason')}. Fix what this check "
        "names (data, training budget or thresholds) before retrying."
    )


def _interval(values) -> tuple:
    if isinstance(values, (list, tuple)) and len(values) == 2:
        return values[0], values[1]
    return None, None


def comparison_html(decision: dict) -> str:
    """Candidate vs the serving model per slice: the paired difference with its interval (a
    chart with error bars), the discordant counts and the McNemar p-values."""
    comparisons = decision.get("comparisons") or []
    if not comparisons:
        return ""
    ordered = sorted(
        comparisons, key=lambda c: (c.get("slice") != "overall", slice_sort_key(c.get("slice", "")))
    )
    level = decision.get("alpha")
    rows = [
        (_short(c.get("slice", "")), c.get("difference"), *_interval(c.get("difference_ci"))) for c in ordered
    ]
    references = [(0.0, "no difference")]
    min_gain = (decision.get("thresholds") or {}).get("min_gain")
    if decision.get("policy") == "superiority" and is_number(min_gain):
        references.append((min_gain, "min_gain"))
    elif decision.get("policy") == "non_inferiority" and is_number(decision.get("margin")):
        references.append((-decision["margin"], "-non_inferiority_margin"))
    parts = [
        tag("h3", "Candidate vs the serving model (paired, same test digits)"),
        tag(
            "p",
            esc(
                f"policy {decision.get('policy')}, alpha {fmt(level)}; label slices use "
                "Holm-adjusted intervals (their own alpha below)."
            ),
        ),
    ]
    try:
        parts.append(
            interval_chart(
                rows,
                "accuracy difference (candidate - serving) with its interval",
                "candidate minus serving accuracy",
                references,
            )
        )
    except ValueError as e:
        parts.append(note(str(e), "warn"))
    parts.append(
        table(
            [
                "slice",
                "n",
                "candidate",
                "serving",
                "candidate only right",
                "serving only right",
                "difference",
                "interval",
                "McNemar p",
                "alpha",
            ],
            [
                [
                    c.get("slice"),
                    c.get("n"),
                    c.get("candidate_accuracy"),
                    c.get("baseline_accuracy"),
                    c.get("candidate_only"),
                    c.get("baseline_only"),
                    c.get("difference"),
                    " to ".join(fmt(v) for v in _interval(c.get("difference_ci"))),
                    f"{c['p_value']:.2g}" if is_number(c.get("p_value")) else "-",
                    c.get("alpha"),
                ]
                for c in ordered
            ],
        )
    )
    return "".join(parts)


def push_html(section: dict) -> str:
    """Whether the model was pushed, as which version, and why (not)."""
    parts = [notes(section.get("note"), problems=section.get("problems") or [])]
    record = section.get("record") or {}
    summary = section.get("summary") or {}
    if not record and not summary:
        return "".join(parts)
    pushed = record.get("pushed", summary.get("pushed"))
    parts.append(
        tag(
            "p",
            "push: "
            + (
                badge(f"version {record.get('version', summary.get('version'))}", "ok")
                if pushed == 1
                else badge("not pushed", "neutral")
            ),
        )
    )
    facts = [
        ("reason", record.get("reason") or summary.get("reason")),
        ("serving dir", record.get("serving_dir") or summary.get("serving_dir")),
        ("model id", record.get("model_id")),
        ("model uri", record.get("model_uri")),
        ("model digest", record.get("model_digest")),
        ("time", record.get("time")),
    ]
    parts.append(table(["fact", "value"], [[k, v] for k, v in facts if v is not None], cls="grid facts"))
    return "".join(parts)
