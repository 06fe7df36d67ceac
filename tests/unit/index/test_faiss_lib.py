"""FAISS's bundled BLAS is loaded with kernels for this CPU; numpy's BLAS is left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.index.faiss_lib import core_type

REPORT = (
    "import json, os, threadpoolctl\n"
    "{load}\n"
    "arch = {{i['prefix']: i.get('architecture') for i in threadpoolctl.threadpool_info()}}\n"
    "print(json.dumps([arch, os.environ.get('OPENBLAS_CORETYPE')]))\n"
)


def blas_report(load: str, env: dict[str, str] | None = None) -> tuple[dict, str | None]:
    script = REPORT.format(load=load)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, env=env).stdout
    arch, variable = json.loads(out)
    return arch, variable


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse2 avx avx2 fma avx512f avx512bw avx512dq avx512vl avx512cd", "SkylakeX"),
        ("fpu sse2 avx avx2 fma", "Haswell"),
        ("fpu sse2 avx avx512f", None),  # AVX-512 foundation alone is not enough
        ("fpu sse2 avx", None),
    ],
)
def test_core_type_follows_the_cpu_flags(flags: str, expected: str | None) -> None:
    cpuinfo = f"processor\t: 0\nvendor_id\t: x\nflags\t\t: {flags}\nbugs\t\t: none\n"
    assert core_type(cpuinfo) == expected


def test_nothing_is_chosen_without_cpu_flags() -> None:
    assert core_type("") is None


CPUINFO = Path("/proc/cpuinfo")
THIS_CPU = core_type(CPUINFO.read_text()) if CPUINFO.exists() else None


@pytest.mark.skipif(THIS_CPU is None, reason="no AVX2 or AVX-512 here")
def test_faiss_blas_gets_this_cpus_kernels_and_numpys_is_untouched() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    plain, _ = blas_report("import numpy", env)
    loaded, variable = blas_report("from app.index.faiss_lib import faiss", env)
    assert loaded["libopenblas"] == THIS_CPU
    assert loaded["libscipy_openblas"] == plain["libscipy_openblas"]
    assert variable is None  # the process environment is as it was


def test_a_users_choice_is_kept() -> None:
    env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell"}
    loaded, variable = blas_report("from app.index.faiss_lib import faiss", env)
    assert loaded["libopenblas"] == "Haswell" and variable == "Haswell"
