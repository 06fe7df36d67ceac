"""Thread pools of the native libraries fvc loads, set once per process.

numpy's OpenBLAS starts a thread per core for any product above a few thousand elements, and
its idle threads keep spinning for 0.1-0.2 s after each one. fvc's numpy products are small and
per observation (a vector against the few clusters a batch touched), so those threads gain
nothing, while their spinning takes the second core from FAISS's search (measured: a batch-512
search at about half speed right after a numpy product; docs/benchmarks.md). The big products
run in FAISS, whose own BLAS and OpenMP pool this leaves alone.
"""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager

from threadpoolctl import ThreadpoolController

NUMPY_BLAS_PREFIX = "libscipy_openblas"  # numpy's bundled OpenBLAS, not FAISS's


def single_threaded_numpy_blas() -> AbstractContextManager[object]:
    """Limit numpy's BLAS to one thread: for the process, or for a ``with`` block."""
    importlib.import_module("numpy")  # threadpoolctl only sees libraries already loaded
    return ThreadpoolController().select(prefix=NUMPY_BLAS_PREFIX).limit(limits=1)
