"""numpy's BLAS runs single-threaded in fvc processes; FAISS keeps its own thread pool."""

from __future__ import annotations

import subprocess
import sys


def test_only_numpys_blas_is_limited() -> None:
    script = (
        "import faiss, threadpoolctl\n"
        "from app.threads import single_threaded_numpy_blas\n"
        "before = {i['filepath']: i['num_threads'] for i in threadpoolctl.threadpool_info()}\n"
        "single_threaded_numpy_blas()\n"
        "for i in threadpoolctl.threadpool_info():\n"
        "    numpy_blas = i['prefix'] == 'libscipy_openblas'\n"
        "    print(numpy_blas, i['num_threads'], before[i['filepath']])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    rows = [line.split() for line in out if line]
    assert [r for r in rows if r[0] == "True"] and all(r[1] == "1" for r in rows if r[0] == "True")
    assert all(r[1] == r[2] for r in rows if r[0] == "False")
