"""Poison input against clean input, measured in one run: throughput and peak memory.

Generates N events (default 1,000,000) in two JSONL files (two source
partitions), then the same files with 1 % of the lines replaced by poison,
cycling through: dated 2099 and an hour ahead of the wall clock (``future``),
hours ahead of their partition but in the past (skew: accepted, must not make
the rest late), a 300-character merchant name and a 200-character
transaction id, amounts of 1e300 and 10^30 (``invalid_field``), and one poison
line in a hundred a 70 KB payload (``too_large``). Measures, alternating
clean and poisoned runs:

1. the parse step alone, in this process, where all the per-line work of
   poison is: each chunk parsed by both variants back to back, CPU time,
   median of ``--rounds``;
2. the whole flow, ``python -m bytewax.run dataflow`` as one process per
   variant with every JSONL output on, clean and poisoned alternated: CPU
   seconds of the process (median of ``--rounds``), wall seconds and its
   peak RSS.

and checks that each poisoned run dead-letters exactly the poison (skewed
events aside) and nothing else. Figures go to docs/performance.md.

Usage: .venv/bin/python -m bench.poison_bench [--events 1000000] [--rounds 3] [--out bench/results]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson

from bench.traffic import RATE, T0, iso_ms, payment

ROOT = Path(__file__).resolve().parent.parent


from config.loader import load_settings  # noqa: E402
from operators.parse import ChunkParser  # noqa: E402
from operators.records import RawChunk  # noqa: E402

POISON_EVERY = 100  # 1 %
KINDS = ("future_2099", "future_hour", "skewed", "long_name", "long_id", "amount_1e300", "amount_10e30")


def _poison(ev: dict, n: int, now: float) -> tuple[bytes, str]:
    """The ``n``-th poison line made from a clean event, and its kind."""
    if n % 100 == 99:
        return orjson.dumps({**ev, "note": "x" * 70_000}), "too_large"
    kind = KINDS[n % len(KINDS)]
    ts = T0 + int(ev["transaction_id"][4:]) / RATE
    if kind == "future_2099":
        ev = {**ev, "timestamp": "2099-01-01T00:00:00Z"}
    elif kind == "future_hour":
        ev = {**ev, "timestamp": iso_ms(now + 3600)}
    elif kind == "skewed":
        ev = {**ev, "timestamp": iso_ms(ts + 3 * 3600)}
    elif kind == "long_name":
        ev = {**ev, "merchant_name": "m" * 300}
    elif kind == "long_id":
        ev = {**ev, "transaction_id": "t" * 200}
    elif kind == "amount_1e300":
        ev = {**ev, "amount": 1e300}
    else:
        return orjson.dumps(ev).replace(b'"amount":', b'"amount":1' + b"0" * 30 + b',"was":'), kind
    return orjson.dumps(ev), kind


def generate(base: Path, n: int) -> dict[str, int]:
    """``clean_{a,b}.jsonl`` and ``poison_{a,b}.jsonl``; returns the poison counts by kind."""
    rng = random.Random(7)
    now = time.time()
    kinds: dict[str, int] = {}
    files = {name: open(base / f"{name}.jsonl", "wb") for name in ("clean_a", "clean_b", "poison_a", "poison_b")}
    try:
        for i in range(n):
            ev = payment(i, rng)
            side = "a" if i % 2 == 0 else "b"
            line = orjson.dumps(ev)
            files[f"clean_{side}"].write(line + b"\n")
            if i % POISON_EVERY == POISON_EVERY // 2:
                line, kind = _poison(ev, i // POISON_EVERY, now)
                kinds[kind] = kinds.get(kind, 0) + 1
            files[f"poison_{side}"].write(line + b"\n")
    finally:
        for f in files.values():
            f.close()
    return kinds


def _chunks(paths: list[Path]) -> list[RawChunk]:
    """The files' lines in chunks of 1,000, the two partitions interleaved as a process reads them."""
    per_file = []
    for k, path in enumerate(paths):
        lines = path.read_bytes().splitlines()
        per_file.append(
            [RawChunk(f"p{k}", len(paths), lines[i : i + 1000], str(path), i) for i in range(0, len(lines), 1000)]
        )
    return [chunk for pair in zip(*per_file, strict=True) for chunk in pair]


def parse_cpu(variants: dict[str, list[Path]], rounds: int) -> dict[str, dict[str, float]]:
    """CPU seconds of the parse step per variant, valid events and dead letters.

    Each chunk is parsed by every variant back to back (the first variant
    alternating), so that the machine's load, which moves by a third within
    a minute here, falls on all variants alike; per variant, the median of
    ``rounds`` totals.
    """
    settings = load_settings(environ={})
    chunks = {name: _chunks(paths) for name, paths in variants.items()}
    names = list(variants)
    totals: dict[str, list[float]] = {name: [] for name in names}
    result: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        parsers = {name: ChunkParser(settings) for name in names}
        states: dict[str, dict[str, object]] = {name: {} for name in names}
        cpu = dict.fromkeys(names, 0.0)
        valid = dict.fromkeys(names, 0)
        dead = dict.fromkeys(names, 0)
        gc.collect()
        gc.disable()
        for i in range(len(chunks[names[0]])):
            for name in names if i % 2 == 0 else reversed(names):
                chunk = chunks[name][i]
                start = time.process_time()
                states[name][chunk.part], out = parsers[name].parse(states[name].get(chunk.part), chunk)
                cpu[name] += time.process_time() - start
                valid[name] += out.n_transactions
                dead[name] += len(out.dead_letters)
        gc.enable()
        for name in names:
            totals[name].append(cpu[name])
            result[name] = {"valid": valid[name], "dead": dead[name]}
    for name in names:
        result[name]["cpu_s"] = statistics.median(totals[name])
    return result


def run_flow(pattern: str, out: Path) -> dict[str, float]:
    """One process over the files; wall and CPU seconds, peak RSS in MB, output counts."""
    shutil.rmtree(out, ignore_errors=True)
    config = out.parent / f"{out.name}.yaml"
    config.write_text(
        f"source: {{type: file, path: '{pattern}', batch_size: 1000}}\n"
        f"sinks: {{jsonl: {{dir: '{out}'}}, stdout: {{alerts: false, metrics: false, dead_letters: false}}}}\n"
    )
    env = {**os.environ, "PAYWATCH_CONFIG": str(config)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflow"], cwd=ROOT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"flow failed with status {status}")
    counts = {}
    for name in ("transactions", "dead_letter"):
        counts[name] = sum(sum(1 for _ in open(p, "rb")) for p in out.glob(f"{name}*.jsonl"))
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        **counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--skip-flow", action="store_true", help="measure the parse step only")
    args = parser.parse_args()
    work = args.out / "poison_bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    kinds = generate(work, args.events)
    n_poison = sum(kinds.values())
    expected_dead = n_poison - kinds.get("skewed", 0)
    print(f"{args.events:,} events, {n_poison:,} poison: {kinds}", flush=True)

    variants = {"clean": "clean", "poison": "poison"}
    paths = {v: [work / f"{prefix}_a.jsonl", work / f"{prefix}_b.jsonl"] for v, prefix in variants.items()}
    parse = parse_cpu(paths, args.rounds)
    for variant, figures in parse.items():
        assert figures["dead"] == (expected_dead if variant == "poison" else 0), (variant, figures, expected_dead)
        assert figures["valid"] + figures["dead"] == args.events, (variant, figures)
        print(f"parse {variant}: {args.events / figures['cpu_s']:,.0f} events per CPU s", flush=True)
    flow: dict[str, list[dict]] = {v: [] for v in variants}
    if not args.skip_flow:
        for _ in range(args.rounds):
            for variant, prefix in variants.items():
                result = run_flow(str(work / f"{prefix}_*.jsonl"), work / f"out_{variant}")
                assert result["dead_letter"] == (expected_dead if variant == "poison" else 0), result
                assert result["transactions"] + result["dead_letter"] == args.events, result
                flow[variant].append(result)
                print(f"flow {variant}: {result}", flush=True)

    summary: dict = {"events": args.events, "poison": kinds, "parse": parse}
    summary["parse_events_per_cpu_s"] = {v: args.events / parse[v]["cpu_s"] for v in variants}
    summary["parse_poison_vs_clean"] = parse["clean"]["cpu_s"] / parse["poison"]["cpu_s"]
    if not args.skip_flow:
        flow_cpu = {v: statistics.median(r["cpu_s"] for r in flow[v]) for v in variants}
        summary["flow"] = flow
        summary["flow_events_per_cpu_s"] = {v: args.events / flow_cpu[v] for v in variants}
        summary["flow_poison_vs_clean"] = flow_cpu["clean"] / flow_cpu["poison"]
        summary["flow_peak_rss_mb"] = {v: max(r["peak_rss_mb"] for r in flow[v]) for v in variants}
    print(json.dumps({k: v for k, v in summary.items() if k not in ("flow", "parse")}, indent=2))
    (args.out / "poison_bench.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
