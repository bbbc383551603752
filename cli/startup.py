"""What ``python -m bytewax.run dataflow`` does before Bytewax takes over.

Settings are loaded, the servers the flow depends on are reached, the
recovery directory is checked against the source, and only then is the flow
handed to Bytewax, so that every mistake an operator can make at start ends
in one paragraph naming the key, address or directory, never a Rust panic or
a 50-line traceback (``PAYWATCH_DEBUG=1`` shows the traceback as well). The
banner then says what the process reads, where results go, whether it
resumes, and what a rerun replaces.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from bytewax.dataflow import Dataflow

from cli.cluster_start import wait_for_local_peers
from config import Settings, SettingsError, load_settings
from connectors import shutdown
from connectors.preflight import StartError, check_recovery, check_servers
from connectors.recovery_store import RecoveryStore
from connectors.recovery_upgrade import RecoveryUpgrade, source_step_id, upgrade_recovery
from connectors.sources import build_source

GC_THRESHOLD = 50_000
"""Allocations between young collections: a grown chunk (20,000 events) allocates several objects
per event, all alive until the chunk is done; at 10,000 each chunk paid a dozen collections that
freed nothing (the whole process 5-10 % slower on 500,000 lines, the same peak memory)."""
DEBUG_ENV = "PAYWATCH_DEBUG"
FlowBuilder = Callable[..., Dataflow]


def start(build_flow: FlowBuilder, argv: Optional[list[str]] = None) -> Dataflow:
    """Build the flow for ``bytewax.run``; on any start-up failure exit with one paragraph."""
    try:
        settings = load_settings()
        check_servers(settings)
        source = build_source(settings)
        flow = build_flow(settings, source=source)
        recovery = recovery_directory(argv)
        store = check_recovery(recovery, source.list_parts(), source_step_id(flow)) if recovery else None
        upgrade = upgrade_recovery(recovery, flow) if recovery else None
    except (SettingsError, StartError) as exc:
        _fail(str(exc))
    except FileNotFoundError as exc:
        _fail(f"{exc.strerror}: {exc.filename}. Check source.path (a file or a glob).")
    except Exception as exc:  # anything else at start: still one paragraph, the traceback on request
        _fail(f"{type(exc).__name__}: {exc}")
    shutdown.install(recovery=recovery is not None)
    sys.stderr.write(banner(settings, store, upgrade))
    _tune_garbage_collector()
    # Last, so that its own start-up overlaps the peers': Timely's first connect then finds them.
    wait_for_local_peers(sys.argv[1:] if argv is None else argv)
    return flow


def recovery_directory(argv: Optional[list[str]] = None) -> Optional[str]:
    """The ``-r`` / ``BYTEWAX_RECOVERY_DIRECTORY`` that ``bytewax.run`` will open, if any."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-r", "--recovery-directory", default=os.environ.get("BYTEWAX_RECOVERY_DIRECTORY"))
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args.recovery_directory


def _fail(message: str) -> None:
    if os.environ.get(DEBUG_ENV) == "1":
        traceback.print_exc()
    hint = "" if os.environ.get(DEBUG_ENV) == "1" else f" ({DEBUG_ENV}=1 shows the traceback.)"
    sys.stderr.write(f"paywatch: cannot start: {message}{hint}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def _tune_garbage_collector() -> None:
    """Collect less often in a process that allocates a chunk's objects per batch.

    With the default threshold (700 allocations) CPython runs a young
    collection every few dozen events, and each one walks every container
    still alive. Freezing what start-up built (modules, settings, the flow)
    takes it out of every later collection; a higher first threshold trades a
    few MB of young garbage for about a tenth of the collections. Reference
    counting still frees almost everything at once: only cycles wait.
    """
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


def banner(settings: Settings, store: Optional[RecoveryStore] = None, upgrade: Optional[RecoveryUpgrade] = None) -> str:
    """A few lines for whoever started the flow: what it reads, where results go, what it resumes."""
    source: str = settings.source.type
    if source == "simulator":
        sim = settings.simulator
        pace = f"{sim.rate:g} events/s" if sim.rate else "as fast as possible"
        amount = f"{sim.events} events" if sim.events else "endless"
        source = f"simulator (scenario {sim.scenario}, {pace}, {amount})"
    elif source == "file":
        source = f"file {settings.source.path}"
    outputs = ["stdout"] if any(settings.sinks.stdout.model_dump().values()) else []
    if settings.sinks.jsonl.dir:
        outputs.append(f"jsonl:{settings.sinks.jsonl.dir}")
    if settings.sinks.lake.enabled:
        outputs.append(f"lake:{settings.sinks.lake.uri}")
    lateness = settings.windows.allowed_lateness_seconds
    lines = [
        f"paywatch: reading {source}; writing to {', '.join(outputs) or 'nothing'}. "
        f"Per-minute metrics appear once a minute of event time has closed (+{lateness:g}s lateness); "
        "the first minute after a start is marked partial.",
    ]
    if store is not None and store.resumes:
        lines.append(
            f"paywatch: resuming from recovery directory {store.directory} (snapshot epoch {store.commit_epoch}): "
            "source positions and window and user state continue; output files keep what was written before."
        )
    elif store is not None:
        lines.append(f"paywatch: recovery directory {store.directory} holds no snapshot yet: starting afresh.")
    if upgrade is not None:
        if upgrade.renamed:
            lines.append(
                "paywatch: recovery state moved to this release's step ids: "
                + ", ".join(f"{old} -> {new}" for old, new in sorted(upgrade.renamed.items()))
                + "."
            )
        lines.extend(f"paywatch: WARNING: {warning}" for warning in upgrade.warnings())
    replaced = _earlier_outputs(settings) if store is None or not store.resumes else []
    if replaced:
        shown = ", ".join(p.name for p in replaced[:4]) + (
            f" and {len(replaced) - 4} more" if len(replaced) > 4 else ""
        )
        lines.append(
            f"paywatch: replacing {len(replaced)} non-empty output file(s) of an earlier run in "
            f"{settings.sinks.jsonl.dir}: {shown}."
        )
    return "".join(line + "\n" for line in lines)


def _earlier_outputs(settings: Settings) -> list[Path]:
    directory = settings.sinks.jsonl.dir
    if not directory:
        return []
    names = ("alerts", "metrics", "transactions", "dead_letter")
    found = [p for p in sorted(Path(directory).glob("*-*.jsonl")) if p.name.split("-", 1)[0] in names]
    return [p for p in found if p.stat().st_size > 0]
