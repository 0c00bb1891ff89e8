"""HTML of the report's data sections: statistics per split and anomalies.

Each function takes its part of `collect()`'s result and returns an HTML fragment; all text
is escaped.
"""

from __future__ import annotations

from pipeline.formats.examples import NUM_CLASSES
from pipeline.report.markup import Raw, badge, esc, note, table, tag
from pipeline.report.svg import Series, bar_chart


def notes(*texts, problems=()) -> str:
    """Availability notes (info) and problems (warnings), each on its own line."""
    return "".join(note(t) for t in texts if t) + "".join(note(p, "warn") for p in problems)


def _label_chart(statistics: dict) -> str:
    splits = [s for s, e in statistics.items() if e.get("label_counts") and sum(e["label_counts"]) > 0]
    if not splits:
        return note("no exact label histogram in the statistics", "warn")
    series = []
    for split in splits:
        counts = statistics[split]["label_counts"][:NUM_CLASSES]
        total = sum(statistics[split]["label_counts"])
        series.append(
            Series(split, values=[100.0 * c / total for c in counts] + [None] * (NUM_CLASSES - len(counts)))
        )
    return bar_chart(
        [str(d) for d in range(NUM_CLASSES)],
        series,
        "Label distribution per split",
        "digit",
        "% of the split's examples",
        width=560,
        digits=2,
    )


def statistics_html(section: dict) -> str:
    """Examples, pixel statistics and the label distribution of each split."""
    parts = [notes(section.get("statistics_note"), problems=section.get("statistics_problems") or [])]
    statistics = section.get("statistics")
    if not statistics:
        return "".join(parts)
    anomalies = (section.get("anomalies") or {}).get("splits") or {}
    rows = []
    for split, entry in statistics.items():
        findings = anomalies.get(split)
        errors = sum(f["severity"] != "WARNING" for f in findings) if findings is not None else None
        rows.append(
            [
                split,
                entry["examples"],
                entry["pixel_mean"],
                entry["pixel_std"],
                entry["zero_pixel_share"],
                entry["ink_density_mean"],
                entry["label_out_of_range"],
                "-" if findings is None else f"{len(findings)} ({errors} blocking)",
            ]
        )
    parts.append(
        table(
            [
                "split",
                "examples",
                "pixel mean",
                "pixel std",
                "share of 0 pixels",
                "mean ink density",
                "labels outside 0..9",
                "anomalies",
            ],
            rows,
        )
    )
    parts.append(tag("div", _label_chart(statistics), cls="charts"))
    count_rows = [
        [split] + list((entry.get("label_counts") or [])[:NUM_CLASSES])
        for split, entry in statistics.items()
        if entry.get("label_counts")
    ]
    if count_rows:
        parts.append(
            tag(
                "details",
                tag("summary", "label counts")
                + table(["split"] + [str(d) for d in range(NUM_CLASSES)], count_rows),
            )
        )
    return "".join(parts)


def _leakage_html(leakage) -> str:
    """The train/test leakage counts (leakage.json), or "" for an artifact written without them."""
    if not leakage:
        return ""
    rows = [
        [
            "exact",
            leakage.get("exact_duplicates"),
            f"{leakage.get('max_exact')} digits",
            ", ".join(leakage.get("first_exact") or []) or "-",
        ],
        [
            "near",
            f"{leakage.get('near_duplicates')} ({leakage.get('near_duplicate_rate', 0):.4%})",
            f"{leakage.get('max_near_rate', 0):.4%}",
            ", ".join(leakage.get("first_near") or []) or "-",
        ],
    ]
    checked = " + ".join(f"{s} {n}" for s, n in (leakage.get("checked") or {}).items())
    verdict = badge("exceeded", "bad") if leakage.get("exceeded") else badge("ok", "ok")
    return tag(
        "p",
        esc(f"train/test leakage ({checked} digits against {leakage.get('test_digits')} test digits): ")
        + verdict,
    ) + table(["duplicates", "found", "limit", "first records"], rows)


def _drift_html(drift) -> str:
    if not drift:
        return ""
    # drift.json names its baseline (previous span N, or the reference on a first span); one
    # written before baselines were named was always against the previous span.
    against = drift.get("baseline") or ("the previous span" if drift.get("checked") else "")
    parts = [
        tag(
            "p",
            esc(
                f"drift ({drift.get('split', 'train')} split{' against ' + against if against else ''}): "
                f"{drift.get('note') or ''}"
            ),
        )
    ]
    measurements = drift.get("measurements") or []
    if measurements:
        parts.append(
            table(
                ["feature", "measure", "value", "threshold", "result"],
                [
                    [
                        m.get("feature"),
                        m.get("metric"),
                        m.get("value"),
                        m.get("threshold"),
                        Raw(badge("exceeded", "bad") if m.get("exceeded") else badge("ok", "ok")),
                    ]
                    for m in measurements
                ],
            )
        )
    for problem in drift.get("problems") or []:
        parts.append(
            note(
                f"{problem.get('feature', '')}: {problem.get('description', problem)}"
                if isinstance(problem, dict)
                else str(problem),
                "warn",
            )
        )
    return "".join(parts)


def anomalies_html(section: dict) -> str:
    """The data gate's verdict, every anomaly by split and feature, drift, and report.txt."""
    parts = [notes(section.get("anomalies_note"), problems=section.get("anomalies_problems") or [])]
    anomalies = section.get("anomalies")
    if anomalies is None:
        return "".join(parts)
    passed = section.get("validation_passed")
    if passed is not None:
        parts.append(tag("p", "data gate: " + (badge("passed", "ok") if passed else badge("failed", "bad"))))
    rows, classes = [], []
    for split, findings in anomalies["splits"].items():
        for f in findings:
            rows.append(
                [
                    split,
                    f["feature"],
                    f["severity"],
                    " + ".join(f["reasons"]) or "-",
                    f["short_description"],
                    f["description"],
                ]
            )
            classes.append("bad" if f["severity"] != "WARNING" else "warn")
    if rows:
        parts.append(
            table(
                ["split", "feature", "severity", "anomaly", "summary", "description"],
                rows,
                row_classes=classes,
            )
        )
    else:
        parts.append(tag("p", esc(f"no anomalies in splits {', '.join(anomalies['splits']) or '(none)'}")))
    parts.append(_drift_html(anomalies.get("drift")))
    parts.append(_leakage_html(anomalies.get("leakage")))
    if anomalies.get("report"):
        parts.append(tag("details", tag("summary", "report.txt") + tag("pre", esc(anomalies["report"]))))
    return "".join(parts)
