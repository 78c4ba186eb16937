"""Nothing the local stack starts outlives its launcher, however the launcher ends.

Two layers, because the launcher may die without running any code of its own (SIGKILL):

* ``die_with_parent`` runs in each service's process before exec: the kernel sends the service
  SIGTERM (its clean stop) when the launcher exits.
* The reaper (this file run by ``python``) runs in a session of its own and reads from
  its stdin the process group of every service the launcher starts, one number a line. End of
  file comes when the launcher exits for any reason; the reaper then gives those groups
  ``GRACE_SECONDS`` to end and SIGKILLs whatever is left of each, so a service that hangs in its
  stop and any process a service forked (which the parent-death signal does not reach) go too.
  After a clean stop the groups are already empty and the reaper exits at once.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Callable, Optional

GRACE_SECONDS = 30.0  # a service's own stop after the parent-death signal; then SIGKILL
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# loaded here, in the launcher, so the forked child only calls into it
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets SIGTERM when the process that
    calls this exits (on Linux; elsewhere the reaper alone does the work)."""
    parent = os.getpid()

    def arm() -> None:
        if _LIBC is None:
            return
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the launcher died before the signal was armed: do not start
            os._exit(1)

    return arm


def group_alive(pgid: int) -> bool:
    """Whether any process is left in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the number now belongs to someone else's group: not ours to wait for
        return False
    return True


def kill_group(pgid: int, signum: int = signal.SIGKILL) -> None:
    """Send ``signum`` to every process in group ``pgid``; an empty group is not an error."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class ReaperHandle:
    """The launcher's end: starts the reaper and tells it each service's process group."""

    def __init__(self, log: IO[bytes]) -> None:
        # its own session: a SIGHUP or Ctrl-C sent to the launcher's group does not reach it
        # run by path, not -m: the launcher's own copy, whatever the children's PYTHONPATH says
        self._process: Optional[subprocess.Popen] = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())], stdin=subprocess.PIPE, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)

    def watch(self, pgid: int) -> None:
        """Have the reaper end group ``pgid`` once the launcher is gone."""
        if self._process is None or self._process.stdin is None:
            return
        try:
            self._process.stdin.write(f"{pgid}\n".encode())
            self._process.stdin.flush()
        except OSError:  # the reaper is gone; the parent-death signal still stops the services
            pass

    def close(self, timeout: float = 5.0) -> None:
        """End of file for the reaper, after a stop that left its groups empty: it exits at once."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass  # it is reaping stragglers in its own session; it ends within GRACE_SECONDS


def reap(lines: IO[str], grace: float = GRACE_SECONDS) -> list[int]:
    """Read process groups until end of file, wait up to ``grace`` seconds for them to end,
    SIGKILL what is left; returns the groups that had to be killed."""
    groups = [int(line) for line in lines if line.strip()]
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(group_alive(g) for g in groups):
        time.sleep(0.2)
    killed = [g for g in groups if group_alive(g)]
    for pgid in killed:
        kill_group(pgid)
    return killed


def main() -> int:
    # the launcher's end of file is the only thing that ends the wait
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    killed = reap(sys.stdin)
    if killed:
        print(f"turok reaper: SIGKILLed process groups {killed} left after the launcher ended", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
