"""The engine stays pure: importing it loads no Kafka, Redis or FAISS module."""

from __future__ import annotations

import subprocess
import sys


def test_engine_imports_no_io_library() -> None:
    code = (
        "import sys, app.engine; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('faust', 'redis', 'faiss', 'aiokafka', 'confluent_kafka', 'kafka')]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
