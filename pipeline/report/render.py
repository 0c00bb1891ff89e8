"""The report page: one self-contained HTML document from `collect()`'s result.

Self-contained: inline CSS, inline SVG, images as `data:` URIs, no script, and a Content
Security Policy that forbids the browser to fetch anything (`default-src 'none'`), so the page
opens offline and cannot leak a request even if a value slipped through.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.report import sections_data, sections_model
from pipeline.report.markup import Raw, badge, esc, note, table, tag

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
:root { --fg:#1d2330; --muted:#5b6473; --line:#d8dde6; --bg:#ffffff; --panel:#f6f8fb; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); background: var(--bg); margin: 0; }
header.top { background: #1d2330; color: #fff; padding: 16px 28px; }
header.top h1 { margin: 0 0 6px; font-size: 20px; }
header.top .meta { color: #c9d1de; font-size: 13px; }
nav { position: sticky; top: 0; background: var(--panel); border-bottom: 1px solid var(--line);
      padding: 6px 28px; z-index: 1; }
nav a { color: var(--fg); margin-right: 14px; text-decoration: none; font-size: 13px; }
main { padding: 8px 28px 40px; max-width: 1280px; }
section { border-bottom: 1px solid var(--line); padding: 10px 0 18px; }
h2 { font-size: 17px; margin: 14px 0 8px; }
h3 { font-size: 15px; margin: 12px 0 6px; }
table.grid { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
table.grid th, table.grid td { border: 1px solid var(--line); padding: 3px 8px; text-align: left;
                               vertical-align: top; }
table.grid th { background: var(--panel); }
table.grid td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.facts td:first-child { color: var(--muted); }
tr.bad td { background: #fdecea; }
tr.warn td { background: #fff6e0; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
         font-weight: 600; color: #fff; }
.badge.ok { background: #1a7f4b; } .badge.bad { background: #c0392b; }
.badge.warn { background: #b7791f; } .badge.neutral { background: #5b6473; }
.badge.info { background: #0072b2; }
p.note { margin: 6px 0; padding: 5px 10px; border-left: 4px solid #0072b2; background: #eef5fb; }
p.note.warn { border-color: #b7791f; background: #fff6e0; }
p.note.error { border-color: #c0392b; background: #fdecea; }
.charts { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; margin: 8px 0; }
svg.chart { background: #fff; border: 1px solid var(--line); }
svg .ct { font-size: 13px; font-weight: 600; fill: var(--fg); }
svg .al { font-size: 12px; fill: var(--muted); }
svg .tl { font-size: 11px; fill: var(--muted); }
svg .gl { stroke: #eceff4; } svg .ax { stroke: #8a93a3; }
table.confusion { border-collapse: collapse; font-size: 12px; margin: 4px 0; }
table.confusion caption { text-align: left; font-weight: 600; padding-bottom: 4px; }
table.confusion th, table.confusion td { border: 1px solid var(--line); padding: 0;
                                         width: 40px; height: 28px; text-align: center; }
table.confusion th { background: var(--panel); }
table.confusion td.num { width: 56px; padding: 0 6px; text-align: right; }
.gallery { display: flex; flex-wrap: wrap; gap: 8px; }
figure.digit { margin: 0; padding: 4px; border: 1px solid var(--line); background: var(--panel);
               text-align: center; width: 70px; }
figure.digit img { image-rendering: pixelated; display: block; margin: 0 auto; background: #000; }
figure.digit figcaption { font-size: 11px; line-height: 1.25; margin-top: 2px; }
pre { background: var(--panel); padding: 8px; overflow-x: auto; font-size: 12px; }
details { margin: 6px 0; } summary { cursor: pointer; color: var(--muted); }
footer { color: var(--muted); font-size: 12px; padding: 12px 28px; }
"""

STATE_BADGES = {"ran": "ok", "cached": "info", "skipped": "neutral", "failed": "bad"}

SECTIONS = (
    ("steps", "Steps"),
    ("data", "Data statistics"),
    ("anomalies", "Anomalies"),
    ("training", "Training"),
    ("metrics", "Evaluation per slice"),
    ("confusion", "Confusion matrix"),
    ("gallery", "Misclassified digits"),
    ("blessing", "Blessing"),
    ("push", "Push"),
)


def spans_read(spans: list | None, layout: str | None) -> str:
    """What a run read, for a page header, from its summary's `data` entry (spans, layout):
    "flat data folder (no spans)", "spans 3, 4", or "spans -" when none resolved (summaries
    written before "layout" was recorded name their span numbers, 0 for a flat folder)."""
    if spans and layout == "flat":
        return "flat data folder (no spans)"
    return f"spans {', '.join(map(str, spans)) if spans else '-'}"


def _header(run: dict) -> str:
    ok = run.get("status") == "completed"
    status = badge(f"{run.get('status')} (exit {run.get('exit_code')})", "ok" if ok else "bad")
    meta = [
        f"started {run.get('started')}",
        f"finished {run.get('finished')}",
        spans_read(run.get("spans"), run.get("layout")),
        f"data {run.get('data_root')}",
        f"pipeline root {run.get('pipeline_root')}",
        f"serving dir {run.get('serving_dir')}",
    ]
    body = tag("h1", esc(f"MNIST pipeline run {run.get('run_id')} ") + status) + tag(
        "div", " &middot; ".join(esc(m) for m in meta), cls="meta"
    )
    return tag("header", body, cls="top")


def _steps(run: dict) -> str:
    parts = []
    if run.get("message"):
        parts.append(note(run["message"], "error" if run.get("status") != "completed" else "info"))
    rows = []
    for step in run.get("steps") or []:
        state = step.get("state")
        rows.append(
            [
                step.get("name"),
                _raw_badge(state),
                step.get("seconds"),
                step.get("execution_id"),
                step.get("detail") or "",
            ]
        )
    parts.append(
        table(
            ["step", "state", "seconds", "execution", "reason / error"],
            rows,
            row_classes=["bad" if s.get("state") == "failed" else None for s in run.get("steps") or []],
            digits=[None, None, 2],
        )
    )
    return "".join(parts)


def _raw_badge(state) -> Raw:
    return Raw(badge(str(state), STATE_BADGES.get(state, "neutral")))


def render_report(data: dict, generated_at: str = "") -> str:
    """The whole HTML document for `collect()`'s result `data`."""
    run = data["run"]
    bodies = {
        "steps": _steps(run),
        "data": sections_data.statistics_html(data["data"]),
        "anomalies": sections_data.anomalies_html(data["data"]),
        "training": sections_model.training_html(data["training"]),
        "metrics": sections_model.metrics_html(data["evaluation"]),
        "confusion": sections_model.confusion_html(data["analysis"]),
        "gallery": sections_model.gallery_html(data["analysis"]),
        "blessing": sections_model.blessing_html(data["evaluation"]),
        "push": sections_model.push_html(data["push"]),
    }
    nav = tag("nav", "".join(tag("a", esc(title), href=f"#{key}") for key, title in SECTIONS))
    main = "".join(
        tag("section", tag("h2", esc(title)) + (bodies[key] or note("nothing to show")), id=key)
        for key, title in SECTIONS
    )
    generated_at = generated_at or datetime.now(UTC).isoformat(timespec="seconds")
    footer = tag(
        "footer",
        esc(
            f"generated {generated_at} from {run.get('pipeline_root')}/runs/"
            f"{run.get('run_id')}/summary.json and the artifacts it names; "
            "self-contained, opens offline"
        ),
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc('MNIST run ' + str(run.get('run_id')))}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"{_header(run)}{nav}<main>{main}</main>{footer}</body></html>\n"
    )
