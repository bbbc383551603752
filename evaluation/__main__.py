"""``python -m evaluation``: score the dataflow's alerts on a labelled simulator mix.

Example (the default mix of docs/detection.md)::

    python -m evaluation --events 1100000 --seed 7 --out out/evaluation

Writes ``report.json`` and ``timeline.png`` to ``--out`` (plus the run's
JSONL output), prints the table, and exits 1 when ``--check`` is given and
the issue's bar is not met.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import orjson

from connectors.simulator.source import scenario_labels
from evaluation import report as reporting
from evaluation.matching import TypeReport, late_routing, match
from evaluation.runner import INPUT_DIR, LAYOUTS, RunOutput, build_settings, run, write_layout
from evaluation.timeline import render

DEFAULT_START = "2025-07-09T19:00:00Z"


@dataclass
class Evaluation:
    """Everything one evaluation produced."""

    output: RunOutput
    labels: list[dict]
    reports: dict[str, TypeReport]
    bar: dict[str, Any]
    late: dict[str, Any]
    document: dict[str, Any]


def evaluate(
    out_dir: Path,
    *,
    scenario: str = "mixed",
    events: int = 1_100_000,
    seed: int = 7,
    event_rate: float = 150.0,
    users: int = 10_000,
    partitions: int = 1,
    layout: Optional[str] = None,
    start: str = DEFAULT_START,
    config: Optional[str] = None,
    use_subprocess: bool = False,
    workers: int = 1,
    timeline: bool = True,
    command: str = "",
) -> Evaluation:
    """Run the dataflow on the mix, score it, write report.json (and timeline.png).

    :arg partitions: without ``layout``, the simulator's own partitions (users
        keyed to partitions); with it, the number of files.
    :arg layout: write the events as ``partitions`` JSONL files in this layout
        (:data:`~evaluation.runner.LAYOUTS`) under ``out_dir/input`` and replay
        them through the file source, all read at once.
    """
    simulator = {
        "scenario": scenario,
        "events": events,
        "seed": seed,
        "event_rate": event_rate,
        "users": users,
        "partitions": partitions if layout is None else 1,
        "start": start,
    }
    input_glob = None
    if layout is not None:
        generated = build_settings(simulator, out_dir, config)
        input_glob = write_layout(generated.simulator, partitions, layout, out_dir / INPUT_DIR)
    settings = build_settings(simulator, out_dir, config, input_glob)
    labels = scenario_labels(settings.simulator)
    output = run(settings, use_subprocess=use_subprocess, workers=workers)
    rule = settings.rules.failure_rate
    reports = match(labels, output.alerts, output.n_events, rule.window_seconds, rule.hop_seconds)
    bar = reporting.check_bar(reports, rule.window_seconds)
    late = late_routing(labels, output.dead_letters)
    run_info = {
        "command": command,
        "simulator": settings.simulator.model_dump(mode="json"),
        "layout": None if layout is None else {"name": layout, "files": partitions},
        "rules": settings.rules.model_dump(mode="json", exclude={"fraud"}),
        "allowed_lateness_seconds": settings.windows.allowed_lateness_seconds,
        "events": output.n_events,
        "event_time_span_seconds": round(events / settings.simulator.events_per_event_second, 1),
        "wall_seconds": round(output.wall_seconds, 2),
    }
    document = reporting.document(reports, bar, run_info, late)
    (out_dir / "report.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    if timeline:
        render(
            out_dir / "timeline.png",
            output.metrics,
            output.alerts,
            labels,
            rule.threshold_percent,
            f"Paywatch detection: scenario {scenario}, {output.n_events:,} events, seed {seed}",
            set().union(*(r.false_ids for r in reports.values())),
        )
    return Evaluation(output, labels, reports, bar, late, document)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="mixed", help="simulator scenario (connectors/simulator/scenarios.py)")
    parser.add_argument(
        "--events",
        type=int,
        default=1_100_000,
        help="simulated event slots (default 1,100,000; traffic drops remove some)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--event-rate", type=float, default=150.0, help="events per second of event time")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="source partitions: the simulator's (users keyed to them), or with --layout the number of files",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        help="write the events as --partitions JSONL files in this layout and replay them through the file source",
    )
    parser.add_argument("--start", default=DEFAULT_START, help="event time of the first event")
    parser.add_argument("--config", help="settings YAML layered over the defaults (e.g. tuned rules)")
    parser.add_argument("--out", default="out/evaluation", help="directory for report.json, timeline.png, JSONL")
    parser.add_argument("--subprocess", action="store_true", help="run `python -m bytewax.run dataflow`")
    parser.add_argument("--workers", type=int, default=1, help="bytewax workers (implies --subprocess)")
    parser.add_argument("--no-timeline", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="also print the table in Markdown")
    parser.add_argument("--check", action="store_true", help="exit 1 when the bar of issue 7 is not met")
    args = parser.parse_args(argv)
    command = "python -m evaluation " + " ".join(argv if argv is not None else sys.argv[1:])
    result = evaluate(
        Path(args.out),
        scenario=args.scenario,
        events=args.events,
        seed=args.seed,
        event_rate=args.event_rate,
        users=args.users,
        partitions=args.partitions,
        layout=args.layout,
        start=args.start,
        config=args.config,
        use_subprocess=args.subprocess,
        workers=args.workers,
        timeline=not args.no_timeline,
        command=command.strip(),
    )
    print(
        f"{result.output.n_events:,} events, {len(result.labels)} labels, run {result.output.wall_seconds:.1f} s wall"
    )
    print(reporting.table(result.reports))
    print(reporting.incident_summary(result.reports))
    late = result.late
    print(
        f"late events: {late['caught']}/{late['labels']} routed to dead letters as late, "
        f"{late['unexpected_late']} others judged late"
    )
    if args.markdown:
        print()
        print(reporting.markdown_table(result.reports))
    bar = result.bar
    print("bar (issue 7):", "PASS" if bar["passed"] else "FAIL", *[f"\n  - {f}" for f in bar["failures"]])
    print(
        f"report: {Path(args.out) / 'report.json'}"
        + ("" if args.no_timeline else f", timeline: {Path(args.out) / 'timeline.png'}")
    )
    return 1 if args.check and not bar["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
