"""Start, recognise and stop the local services' processes through pid files, with no supervisor.

``fvc local up`` must return while Kafka and Redis keep running, and ``down`` must stop only
what ``up`` started. A pid file gives both; a look at the process (its command line names the
program, its working directory is the service's own state folder) keeps a recycled pid, now
some other program or another stack's server, from being taken for ours.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from app.errors import LocalStackError

log = logging.getLogger(__name__)

# Runs in a short-lived helper interpreter that starts the service in a session of its own and
# exits at once: the service is re-parented away from the caller, so no zombie and no Popen
# object is left behind in it (pytest turns an unreaped Popen into a ResourceWarning error).
_SPAWN = """
import subprocess, sys
with open(sys.argv[1], "wb") as out:
    child = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
print(child.pid)
"""


def spawn(argv: list[str], output: Path, cwd: Path) -> int:
    """Start ``argv`` detached from this process, its output written to ``output``; its pid."""
    helper = [sys.executable, "-W", "ignore", "-c", _SPAWN, str(output), *argv]
    try:
        done = subprocess.run(  # noqa: S603 - argv is built by fvc, not from user text
            helper, cwd=cwd, capture_output=True, text=True, check=True, timeout=30
        )
        return int(done.stdout.strip())
    except subprocess.CalledProcessError as exc:
        reason = (exc.stderr or "").strip().splitlines()[-1:] or ["unknown error"]
        message = f"could not start {argv[0]}: {reason[0]}"
        raise LocalStackError(message) from exc
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        message = f"could not start {argv[0]}: {exc}"
        raise LocalStackError(message) from exc


def read_pid(path: Path) -> int | None:
    """The pid recorded in ``path``, or None when there is none (or it is garbage)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int | None, keyword: str, home: Path) -> bool:
    """Whether ``pid`` is a live, non-zombie ``keyword`` process working in ``home``.

    Redis rewrites its command line (process title), so the config path cannot be the mark;
    the working directory, which fvc sets when it starts a server, is one that stays.
    """
    return _process(pid, keyword, home) is not None


def _process(pid: int | None, keyword: str, home: Path) -> psutil.Process | None:
    """The process ``alive`` looks for, or None (gone, a zombie, someone else's, not ours)."""
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            ours = (
                proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
                and keyword in " ".join(proc.cmdline())
                and Path(proc.cwd()) == home.resolve()
            )
    except psutil.Error:
        return None
    return proc if ours else None


def stop(pid: int, keyword: str, home: Path, grace: float) -> None:
    """SIGTERM, wait up to ``grace`` seconds for a clean shutdown, then SIGKILL.

    The wait polls ``alive`` rather than ``psutil.wait_procs``: a server is re-parented away
    from fvc, and where nothing reaps it, it stays a zombie that ``wait_procs`` would wait out.
    """
    proc = _process(pid, keyword, home)
    if proc is None:
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.terminate()  # psutil checks first that the pid was not reused meanwhile
    if wait_until(lambda: not alive(pid, keyword, home), grace):
        return
    log.warning("pid %d ignored SIGTERM for %.0fs; sending SIGKILL", pid, grace)
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.kill()
    wait_until(lambda: not alive(pid, keyword, home), 10.0)


def wait_until(condition: Callable[[], bool], timeout: float, every: float = 0.25) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (a TIME_WAIT leftover does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def last_error_line(path: Path, limit: int = 300) -> str:
    """The most telling line of a log: the last ERROR/FATAL/Exception line, else the last line."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "(no log written)"
    lines = [line for line in lines if line]
    telling = [
        line for line in lines if any(w in line for w in ("ERROR", "FATAL", "Exception", "# "))
    ]
    chosen = (telling or lines or ["(log is empty)"])[-1]
    return chosen[:limit]
