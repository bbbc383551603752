"""One thread for numpy's BLAS, set before numpy loads (imported first by ``dataflow.py``).

numpy links OpenBLAS, which starts a pool of one thread per core when numpy
is imported, and each pool thread spins before it sleeps. The flow makes no
BLAS call (no matrix products: its numpy work is sorts, gathers and
element-wise maths, which run on the calling thread), so the pool only costs:
about 0.1 CPU-second per process at start (0.49 -> 0.38 CPU-s for a whole
1,000-event run, docs/performance.md), paid once per process, so twice when
two processes share a machine's cores. An operator's own
``OPENBLAS_NUM_THREADS`` wins; OpenBLAS reads the variable only when it loads,
hence a module with no other job that ``dataflow.py`` imports before anything
that imports numpy.
"""

from __future__ import annotations

import os

BLAS_THREADS_ENV = "OPENBLAS_NUM_THREADS"

os.environ.setdefault(BLAS_THREADS_ENV, "1")
