"""The evaluation report: terminal table, JSON document and the issue's bar.

The bar (issue 7) on the default mix: precision and recall >= 0.99 for every
alert type, failure-rate alerts OPEN within one window length of the
incident start, fewer than 10 false alerts per million events in total.
"""

from __future__ import annotations

from typing import Any, Optional

from evaluation.matching import TypeReport

MIN_PRECISION = 0.99
MIN_RECALL = 0.99
MAX_FALSE_PER_MILLION = 10.0


def check_bar(reports: dict[str, TypeReport], window_seconds: float) -> dict[str, Any]:
    """Which parts of the bar pass; ``passed`` is all of them."""
    failures: list[str] = []
    for name, report in reports.items():
        if report.precision is not None and report.precision < MIN_PRECISION:
            failures.append(f"{name} precision {report.precision} < {MIN_PRECISION}")
        if report.recall is not None and report.recall < MIN_RECALL:
            failures.append(f"{name} recall {report.recall} < {MIN_RECALL}")
    fr = reports["FAILURE_RATE"]
    if fr.open_delays and max(fr.open_delays) > window_seconds:
        failures.append(f"FAILURE_RATE worst OPEN delay {max(fr.open_delays)} s > {window_seconds} s")
    false_total = sum(r.false_per_million for r in reports.values())
    if false_total >= MAX_FALSE_PER_MILLION:
        failures.append(f"{false_total:.2f} false alerts per million >= {MAX_FALSE_PER_MILLION}")
    return {"passed": not failures, "failures": failures, "false_per_million_total": round(false_total, 3)}


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _delay(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    median = (
        ordered[len(ordered) // 2]
        if len(ordered) % 2
        else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    )
    return f"{median:.1f} / {ordered[-1]:.1f}"


def table(reports: dict[str, TypeReport]) -> str:
    """A fixed-width table; delays are median / worst in seconds of event time."""
    header = (
        "type",
        "labels",
        "near",
        "alerts",
        "detected",
        "dup",
        "false",
        "precision",
        "recall",
        "false/M",
        "open delay s",
        "resolve delay s",
    )
    rows = [header]
    for name, r in reports.items():
        rows.append(
            (
                name,
                str(r.labels),
                str(r.near_misses),
                str(r.alerts),
                str(r.detected),
                str(r.duplicates),
                str(r.false_alerts),
                _fmt(r.precision),
                _fmt(r.recall),
                _fmt(r.false_per_million, 2),
                _delay(r.open_delays),
                _delay(r.resolve_delays),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(widths[i]) for i, cell in enumerate(row) if i]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(reports: dict[str, TypeReport]) -> str:
    """The same table in Markdown, for docs/detection.md."""
    lines = [
        "| type | labels | near misses | alerts | detected | duplicates | false | precision | recall "
        "| false / M events | OPEN delay s (median / worst) | RESOLVED delay s (median / worst) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in reports.items():
        lines.append(
            f"| {name} | {r.labels} | {r.near_misses} | {r.alerts} | {r.detected} | {r.duplicates} | "
            f"{r.false_alerts} | {_fmt(r.precision)} | {_fmt(r.recall)} | {_fmt(r.false_per_million, 2)} | "
            f"{_delay(r.open_delays)} | {_delay(r.resolve_delays)} |"
        )
    return "\n".join(lines)


def document(
    reports: dict[str, TypeReport], bar: dict[str, Any], run: dict[str, Any], late: dict[str, Any]
) -> dict[str, Any]:
    """The JSON report."""
    return {"run": run, "bar": bar, "late_events": late, "types": {name: r.summary() for name, r in reports.items()}}
