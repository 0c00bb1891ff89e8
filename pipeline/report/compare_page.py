"""The comparison page of `run_local.py compare`: models side by side, then every pair's paired
statistics (as `pipeline.compare.build_comparison` computed them), in one self-contained HTML
document with the run report's style, Content Security Policy and building blocks.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.report.markup import Raw, esc, fmt, is_number, note, table, tag
from pipeline.report.render import CSP, STYLE, spans_read
from pipeline.report.svg import Series, bar_chart, interval_chart


def _interval(values) -> tuple:
    if isinstance(values, (list, tuple)) and len(values) == 2:
        return values[0], values[1]
    return None, None


def _interval_text(values) -> str:
    low, high = _interval(values)
    return "-" if low is None or high is None else f"{fmt(low)} to {fmt(high)}"


def _short(slice_name: str) -> str:
    return "all" if slice_name == "overall" else slice_name.split("=", 1)[-1]


def _models_html(comparison: dict) -> str:
    models = comparison.get("models") or []
    level = f"{100 * (1 - comparison['alpha']):g}%"
    rows = []
    for m in models:
        training = m.get("training") or {}
        rows.append(
            [
                m.get("name"),
                Raw(tag("code", esc(m.get("module_file")), title=m.get("module_sha256"))),
                m.get("entry_point"),
                str(m.get("module_sha256") or "-")[:12],
                m.get("accuracy"),
                _interval_text(m.get("accuracy_ci")),
                m.get("correct"),
                m.get("n"),
                training.get("steps_trained"),
                training.get("train_seconds"),
                training.get("train_examples_per_sec"),
                m.get("run_id"),
            ]
        )
    parts = [
        table(
            [
                "model",
                "module",
                "entry point",
                "sha256",
                "test accuracy",
                f"{level} CI (Wilson)",
                "right",
                "test digits",
                "steps trained",
                "training s",
                "examples/s",
                "run",
            ],
            rows,
        )
    ]
    parts.append(
        table(
            ["model", "config", "[trainer.hparams]"],
            [[m.get("name"), m.get("config_file"), str(m.get("hparams") or {})] for m in models],
            cls="grid facts",
        )
    )
    labels = [f"label={d}" for d in range(10)]
    series = [
        Series(m["name"], values=[(m.get("accuracy_by_label") or {}).get(s) for s in labels]) for m in models
    ]
    values = [v for s in series for v in s.values if is_number(v)]
    if values:
        floor = max(0.0, min(values) - 0.05)
        parts.append(
            tag(
                "div",
                bar_chart(
                    [s.split("=")[1] for s in labels],
                    series,
                    f"Test accuracy per digit (axis from {floor:.2f})",
                    "digit",
                    "accuracy",
                    y_range=(floor, 1.0),
                ),
                cls="charts",
            )
        )
    return "".join(parts)


def _pair_html(pair: dict, alpha: float) -> str:
    a, b = pair["a"], pair["b"]
    comparisons = pair.get("comparisons") or []
    parts = [
        tag("h3", esc(f"{a} vs {b}")),
        tag("p", tag("strong", esc(pair.get("verdict", ""))), cls="verdict"),
    ]
    rows = [
        (_short(c["slice"]), c.get("difference"), *_interval(c.get("difference_ci"))) for c in comparisons
    ]
    try:
        parts.append(
            tag(
                "div",
                interval_chart(
                    rows,
                    f"accuracy difference ({a} - {b}) with its interval",
                    f"{a} minus {b} accuracy",
                    [(0.0, "no difference")],
                ),
                cls="charts",
            )
        )
    except ValueError as e:  # no slice with a finite interval
        parts.append(note(str(e), "warn"))
    parts.append(
        table(
            [
                "slice",
                "n",
                f"{a} accuracy",
                f"{b} accuracy",
                f"only {a} right",
                f"only {b} right",
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
                    _interval_text(c.get("difference_ci")),
                    f"{c['p_value']:.2g}" if is_number(c.get("p_value")) else "-",
                    c.get("alpha"),
                ]
                for c in comparisons
            ],
        )
    )
    return "".join(parts)


def render_comparison(comparison: dict, generated_at: str = "") -> str:
    """The whole HTML document for `build_comparison`'s result (plus its "id")."""
    alpha = comparison["alpha"]
    level = f"{100 * (1 - alpha):g}%"
    data = comparison.get("data") or {}
    meta = [
        f"pipeline root {comparison.get('pipeline_root')}",
        f"data {data.get('data_root')}",
        spans_read(data.get("spans"), data.get("layout")),
        f"{comparison.get('test_digits')} test digits",
        f"alpha {fmt(alpha)}",
    ]
    header = tag(
        "header",
        tag("h1", esc(f"MNIST model comparison {comparison.get('id', '')}"))
        + tag("div", " &middot; ".join(esc(m) for m in meta), cls="meta"),
        cls="top",
    )
    method = tag(
        "p",
        esc(
            f"Every model was trained on the same training split and evaluated on the same "
            f"{comparison.get('test_digits')} test digits ({comparison.get('examples')}), so each pair is "
            f"compared digit by digit, with the statistics of the promotion gate: the accuracy difference "
            f"with Newcombe's paired interval at {level}, the exact McNemar p on the digits only one model got "
            f"right, and, for the ten digit slices, Holm's step-down levels (the alpha column). Each pair is "
            f"at its own level; with many pairs, expect about alpha of them to differ by chance."
        ),
    )
    pairs = "".join(_pair_html(p, alpha) for p in comparison.get("pairs") or [])
    main = tag("section", tag("h2", "Models") + _models_html(comparison), id="models") + tag(
        "section", tag("h2", "Pairs (paired, same test digits)") + method + pairs, id="pairs"
    )
    generated_at = generated_at or datetime.now(UTC).isoformat(timespec="seconds")
    footer = tag(
        "footer",
        esc(
            f"generated {generated_at} from the runs' summaries and evaluation artifacts; "
            "self-contained, opens offline"
        ),
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc('MNIST model comparison ' + str(comparison.get('id', '')))}</title>"
        f"<style>{STYLE}</style></head><body>{header}<main>{main}</main>{footer}</body></html>\n"
    )
