"""The flow's process loads numpy with one BLAS thread unless the operator says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Imports the flow module as ``bytewax.run`` does, then asks the OpenBLAS that
# numpy loaded how many threads it runs (its own count, not the variable).
_PROBE = """
import ctypes, os
import dataflow
import numpy
path = next((line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line), None)
threads = None
if path is not None:
    lib = ctypes.CDLL(path)
    for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads"):
        if hasattr(lib, name):
            threads = getattr(lib, name)()
            break
print(os.environ.get("OPENBLAS_NUM_THREADS"), threads)
"""


def _probe(env: dict[str, str]) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=60
    )
    variable, threads = done.stdout.split()
    return variable, threads


@pytest.mark.integration
def test_the_flow_loads_numpy_with_one_blas_thread() -> None:
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}
    variable, threads = _probe(env)
    assert variable == "1"
    if threads == "None":
        pytest.skip("numpy here is not linked to an OpenBLAS that reports its threads")
    assert threads == "1"


@pytest.mark.integration
def test_an_operators_own_setting_wins() -> None:
    variable, _ = _probe({**os.environ, "OPENBLAS_NUM_THREADS": "2"})
    assert variable == "2"
