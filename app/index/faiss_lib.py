"""FAISS, loaded so that the BLAS bundled in its wheel uses this CPU's vector units.

The faiss-cpu wheel carries its own OpenBLAS (0.3.15), which picks its kernels from the CPU it
recognises at load time. It does not recognise recent Xeons and falls back to its generic
``Prescott`` kernels: exact search at batch 512 then runs at ~30 GFLOP/s instead of ~125 on the
same machine (docs/benchmarks.md). When the user has not chosen (``OPENBLAS_CORETYPE`` unset),
this module names the kernel family the CPU's flags support for FAISS's load only; numpy is
loaded first, so its own newer OpenBLAS keeps detecting the CPU itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy  # noqa: F401 - loaded before the variable is set, so numpy's BLAS is not told

CORETYPE = "OPENBLAS_CORETYPE"
AVX512 = frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl"})
AVX2 = frozenset({"avx2", "fma"})


def core_type(cpuinfo: str) -> str | None:
    """The OpenBLAS kernel family for a CPU with these ``/proc/cpuinfo`` flags, or None.

    >>> core_type("flags : fpu sse avx2 fma avx512f avx512bw avx512dq avx512vl")
    'SkylakeX'
    >>> core_type("flags : fpu sse avx2 fma"), core_type("flags : fpu sse")
    ('Haswell', None)
    """
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    if AVX512 <= flags:
        return "SkylakeX"
    if AVX2 <= flags:
        return "Haswell"
    return None


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: OpenBLAS's own detection it is
        return ""


_chosen = os.environ.get(CORETYPE)
_core = None if _chosen else core_type(_cpuinfo())
if _core:
    os.environ[CORETYPE] = _core
try:
    import faiss  # noqa: E402
finally:
    if _core:
        del os.environ[CORETYPE]

__all__ = ["core_type", "faiss"]
