"""The validator's human-readable report and its one-line summary of what failed."""

from __future__ import annotations

from components.example_validator.drift_check import DriftResult
from pipeline.formats.anomalies import DATASET, Finding


def format_report(
    *,
    statistics_uri: str,
    schema_path: str,
    environment: str | None,
    split_counts: dict[str, int],
    split_findings: dict[str, list[Finding]],
    drift: DriftResult | None,
    drift_split: str,
    drift_note: str,
    leakage: dict | None = None,
) -> str:
    """Returns report.txt: one line per anomaly naming split, feature, severity and reasons.

    split_counts / split_findings: per split, examples counted and the anomalies found (drift
    anomalies included). drift: the drift result (naming its baseline), or None when drift was
    not checked, with `drift_note` saying why (or which file was compared with). leakage: the
    leakage.json content (counts, first indexes, limits), or None when not checked.
    """
    errors = sum(f.is_error for items in split_findings.values() for f in items)
    leaked = bool(leakage and leakage.get("exceeded"))
    lines = [
        "ExampleValidator report",
        f"statistics:  {statistics_uri}",
        f"schema:      {schema_path}",
        f"environment: {environment or '(all features)'}",
        f"result:      {'FAILED' if errors or leaked else 'PASSED'} ({errors} ERROR anomalies"
        f"{', train/test leakage above its limits' if leaked else ''})",
        "",
    ]
    for split in sorted(split_findings, key=_split_order):
        items = split_findings[split]
        lines.append(
            f"split {split}: {split_counts.get(split, 0)} examples, "
            f"{len(items)} anomal{'y' if len(items) == 1 else 'ies'}"
        )
        for f in items:
            feature = "(dataset)" if f.feature == DATASET else f.feature
            lines.append(
                f"  {f.severity:<7} split={split} feature={feature} "
                f"anomaly={'+'.join(f.reasons) or 'UNKNOWN'}: {f.short_description}"
            )
            lines.append(f"          {f.description}")
    # Name what the span was compared with: the previous span, or the reference on a first span.
    against = f" against {drift.baseline}" if drift is not None and drift.baseline else ""
    lines += ["", f"drift ({drift_split} split{against}): {drift_note}"]
    if drift is not None:
        for m in drift.measurements:
            verdict = "EXCEEDED" if m.exceeded else "ok"
            lines.append(
                f"  {m.feature:<6} {m.metric} = {m.value:.6f} (threshold {m.threshold:g}): {verdict}"
            )
        for p in drift.problems:
            lines.append(f"  {p.feature:<6} not compared: {p.description}")
        if drift.is_reference and drift.exceeded:
            lines.append(
                "  (a first span is compared with the reference; for data that is not meant to look like "
                "it, set validation.reference_check = false or point validation.reference_path at a "
                "reference of that data: scripts/make_reference.py)"
            )
    if leakage is not None:
        lines += ["", *leakage_lines(leakage)]
    return "\n".join(lines) + "\n"


def leakage_lines(leakage: dict) -> list[str]:
    """report.txt's lines on train/test leakage, from the leakage.json content."""
    checked = leakage["checked"]
    lines = [
        f"train/test leakage ({' + '.join(f'{s} {n}' for s, n in checked.items())} digits against "
        f"{leakage['test_digits']} test digits, {leakage['seconds']:.2f} s): "
        f"{'EXCEEDED' if leakage['exceeded'] else 'ok'}",
        f"  exact duplicates: {leakage['exact_duplicates']} (limit {leakage['max_exact']})"
        + (f", first {', '.join(leakage['first_exact'])}" if leakage["first_exact"] else ""),
        f"  near duplicates:  {leakage['near_duplicates']}, rate {leakage['near_duplicate_rate']:.4%} "
        f"(limit {leakage['max_near_rate']:.4%}; at most {leakage['near_max_pixels']} pixels differ "
        f"by more than {leakage['pixel_tolerance']} grey levels)"
        + (f", first {', '.join(leakage['first_near'])}" if leakage["first_near"] else ""),
    ]
    return lines


def failure_summary(split_findings: dict[str, list[Finding]]) -> str | None:
    """One line naming the first ERROR anomaly (split/feature: what), or None when none."""
    errors = [
        (split, f)
        for split in sorted(split_findings, key=_split_order)
        for f in split_findings[split]
        if f.is_error
    ]
    if not errors:
        return None
    split, first = errors[0]
    feature = "(dataset)" if first.feature == DATASET else first.feature
    line = f"{split}/{feature}: {first.short_description} ({'+'.join(first.reasons) or 'UNKNOWN'})"
    if len(errors) > 1:
        line += f"; {len(errors) - 1} more ERROR anomal{'y' if len(errors) == 2 else 'ies'} in report.txt"
    return line


def _split_order(split: str) -> tuple:
    """train first, then eval, test, then anything else by name."""
    known = ("train", "eval", "test")
    return (known.index(split) if split in known else len(known), split)
