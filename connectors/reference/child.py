"""Reading the merchant table in a child process, off the flow's GIL.

A million-item DynamoDB scan is tens of seconds of pure Python (botocore
parses every page, a dict per item, the rows validated one by one); on a
thread of the flow's process it holds the GIL that the flow's workers need,
and the flow slows for that long at every refresh (docs/performance.md,
"Merchant reference data"). Here one short-lived process per read does the
whole read and the table build, and sends the built
:class:`~operators.reference.merchants.MerchantTable` back through a pipe:
its columns pickle as a few arrays and its ids as one string; the flow's
process only hashes the ids and rebuilds the index when it unpickles it.

- The process is started with the ``spawn`` context (fork + exec): the flow's
  process runs threads (Bytewax's, the sinks', this loader's), and ``fork``
  of a threaded process can copy a lock held by another thread.
- It builds its own AWS client from the same settings, so credentials come
  from the same standard chain (the environment is inherited).
- A read that fails in the child arrives as :class:`MerchantReadError` with
  the child's message; a child that dies without an answer is a failed read
  too (the loader keeps the last good table, or stops the flow at start).
- It runs at a lower priority (:data:`CHILD_NICENESS`): where the flow needs
  every core, the flow's workers come first and the refresh takes longer.
- No orphan: :func:`read_in_child` terminates the child when its ``stop``
  event is set, the child is daemonic (``multiprocessing`` ends it when the
  flow's process exits), and the child leaves on its own when its parent is
  gone (SIGKILL of the flow), and ignores the terminal's Ctrl-C, which the flow's
  process handles.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Optional

from config.settings import Settings
from connectors.reference.merchants import MerchantReadError, read_merchants_counted
from operators.reference.merchants import MerchantTable

#: The child's niceness: the read is background work, so on a busy machine the flow's
#: workers get the cores first and the refresh takes longer (the last table stays in force).
CHILD_NICENESS = 10

#: How often the parent checks its stop event and the child checks its parent.
POLL_SECONDS = 0.2


class ReadStopped(Exception):
    """The read was abandoned because the loader is stopping; the child was terminated."""


def _watch_parent(parent: int) -> None:
    """End this child when the flow's process is gone (its pipe would have no reader)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _child_main(conn: Connection, parent: int, path: str, settings: Settings) -> None:
    """Read and build the table; send ``("ok", (table, skipped, first_bad))`` or ``("error", message)``.

    Ctrl-C reaches the whole process group: the flow's process decides what stops, and ends
    this child itself, so the child ignores SIGINT (no second traceback on the terminal).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(CHILD_NICENESS)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        answer: tuple[str, object] = ("ok", read_merchants_counted(path, settings))
    except MerchantReadError as exc:
        answer = ("error", str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure is a failed read, reported to the parent
        answer = ("error", f"merchant table {path}: {type(exc).__name__}: {exc}")
    conn.send(answer)
    conn.close()


def read_in_child(
    path: str, settings: Settings, stop: Optional[threading.Event] = None
) -> tuple[MerchantTable, int, Optional[str]]:
    """Read the table at ``path`` in a fresh child process: (table, rows skipped, first bad position).

    :raises MerchantReadError: the read failed (in the child, or the child died).
    :raises ReadStopped: ``stop`` was set before the answer came; the child is ended.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_child_main,
        args=(sender, os.getpid(), path, settings),
        name="paywatch-merchants",
        daemon=True,
    )
    answered = False
    try:
        process.start()
        sender.close()
        while not receiver.poll(POLL_SECONDS):
            if stop is not None and stop.is_set():
                raise ReadStopped(path)
            if not process.is_alive() and not receiver.poll(0):
                raise MerchantReadError(
                    f"merchant table {path}: the reading process ended with code {process.exitcode} and no answer"
                )
        try:
            status, value = receiver.recv()
        except EOFError:
            raise MerchantReadError(f"merchant table {path}: the reading process closed its pipe") from None
        answered = True
    finally:
        receiver.close()
        _end(process, grace=5.0 if answered else 0.0)
    if status != "ok":
        raise MerchantReadError(str(value))
    table, skipped, first_bad = value
    return table, skipped, first_bad


def _end(process: multiprocessing.process.BaseProcess, grace: float) -> None:
    """Wait ``grace`` seconds for a child that answered to exit, then terminate (and kill) it."""
    if process.pid is None:  # never started
        return
    process.join(timeout=grace)
    if process.is_alive():
        process.terminate()
        process.join(timeout=5)
    if process.is_alive():
        process.kill()
        process.join()
    process.close()
