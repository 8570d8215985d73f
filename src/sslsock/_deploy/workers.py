"""Worker processes: one server, several processes on one port (an extension).

:func:`run_workers` forks ``workers`` processes that each run the caller's function (which
typically opens a :class:`~sslsock.Listener` with ``reuse_port=True`` on the shared port:
the kernel spreads new connections over them), restarts a worker that dies, and stops
them all gracefully on SIGTERM or Ctrl-C::

    import sslsock

    def serve(worker: sslsock.Worker) -> int:
        with sslsock.Listener(5043, "my-cert", reuse_port=True,
                              ticket_keys="store") as listener:
            worker.ready()
            while not worker.stopping:
                ...  # accept with a short time-out, serve
        return 0

    raise SystemExit(sslsock.run_workers(serve))

The supervisor (the calling process) only forks and waits: it must not have opened
listeners or connections itself (a fork copies a process's threads' memory, not its
threads).  Signals:

* SIGTERM (and SIGINT, as Ctrl-C sends it to the whole process group): each worker's
  ``stopping`` becomes true and ``stop`` (an event) is set; the worker is expected to stop
  accepting, let its channels finish within ``grace`` seconds, close the rest (close_notify)
  and return.  A worker still running ``grace`` + 5 seconds later is killed.  The
  supervisor returns 0 (130 after SIGINT).
* SIGHUP: passed on to the workers; in each, every open listener takes a renewed
  certificate and rewritten ticket keys now (:meth:`Listener.reload`).
* A worker that dies (a crash, a kill) is started again, after a pause that grows while
  restarts keep failing fast (up to 10 s).  A worker that exits before it called
  :meth:`Worker.ready` the first time stops everything: a configuration that cannot work
  (port taken, certificate refused) is reported once, not retried forever.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Optional

from sslsock._core.errors import CertificateError, Error

log = logging.getLogger("sslsock")

#: Seconds a supervisor waits, beyond ``grace``, before killing a worker that does not stop.
KILL_MARGIN = 5.0
_BACKOFF_MAX = 10.0


def available_cpus() -> int:
    """How many CPUs this process may use: its affinity mask (``taskset``, container
    cpusets), lowered by a cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``, as
    ``docker --cpus`` and systemd's ``CPUQuota=`` set them), rounded up; at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def default_handshake_threads() -> int:
    """A listener's handshake threads when it is not told how many: one per CPU this
    process may use (:func:`available_cpus`), less one left to Python, which under the GIL
    uses one CPU at most; at least one (docs/decisions.md has the measurement)."""
    return max(1, available_cpus() - 1)


def _cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> Optional[float]:
    """The tightest CPU quota (in CPUs) from this process's cgroup up to the root: cgroup v2
    ``cpu.max``, else cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; None without
    one (no limit, unreadable).  Each level is looked at, so that a container's view (its
    cgroup mounted as the root) is covered too."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best: Optional[float] = None

    def levels(path: str) -> list[list[str]]:
        parts = [p for p in path.split("/") if p and p != ".."]
        return [parts[:depth] for depth in range(len(parts), -1, -1)]

    def take(cpus: float) -> None:
        nonlocal best
        best = cpus if best is None else min(best, cpus)

    for line in lines:
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":  # cgroup v2
            for level in levels(path):
                words = _read_words(os.path.join(root, *level, "cpu.max"))
                if len(words) == 2 and words[0] != "max":
                    try:
                        take(int(words[0]) / int(words[1]))
                    except (ValueError, ZeroDivisionError):
                        pass
        elif "cpu" in controllers.split(","):  # cgroup v1
            mount = os.path.join(root, controllers)
            if not os.path.isdir(mount):
                mount = os.path.join(root, "cpu")
            for level in levels(path):
                quota = _read_words(os.path.join(mount, *level, "cpu.cfs_quota_us"))
                period = _read_words(os.path.join(mount, *level, "cpu.cfs_period_us"))
                try:
                    q, per = int(quota[0]), int(period[0])
                except (IndexError, ValueError):
                    continue
                if q > 0 and per > 0:
                    take(q / per)
    return best


def _read_words(name: str) -> list[str]:
    try:
        with open(name) as f:
            return f.read().split()
    except OSError:
        return []


class Worker:
    """What a worker function is given: its number, and whether to stop."""

    def __init__(self, index: int, count: int, grace: float, ready_fd: int) -> None:
        self.index = index
        self.count = count
        self.grace = grace
        #: Set when the worker should stop accepting and finish (SIGTERM, SIGINT).
        self.stop = threading.Event()
        self._ready_fd = ready_fd

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    def ready(self, note: str = "") -> None:
        """Tell the supervisor this worker is serving (``note``: one line for it)."""
        if self._ready_fd < 0:
            return
        line = f"{self.index} {note}".replace("\n", " ") + "\n"
        try:
            os.write(self._ready_fd, line.encode()[:4000])
        except OSError:
            pass


def _reload_now() -> None:
    from sslsock._deploy import renewal as _reload

    threading.Thread(target=_reload.check_all, kwargs={"quiet": False, "every": True},
                     name="sslsock-sighup", daemon=True).start()


def _child(target: Callable[[Worker], Optional[int]], worker: Worker) -> None:
    """Run in the forked process; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
        signal.signal(signal.SIGINT, lambda *_: worker.stop.set())
        signal.signal(signal.SIGHUP, lambda *_: _reload_now())
        rc = target(worker)
        code = 0 if rc is None else int(rc)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Error as e:  # network, TLS, certificate: its message says it all
        sys.stderr.write(f"sslsock: error: worker {worker.index}: {e}\n")
        code = 3 if isinstance(e, CertificateError) else 1
    except BaseException:  # noqa: BLE001 - reported, then the exit status says it
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def run_workers(
    target: Callable[[Worker], Optional[int]],
    workers: Optional[int] = None,
    *,
    grace: float = 10.0,
    restart: bool = True,
    on_ready: Optional[Callable[[int, str], None]] = None,
    on_event: Optional[Callable[[str], None]] = None,
) -> int:
    """Run ``target(worker)`` in ``workers`` processes (default: :func:`available_cpus`)
    until SIGTERM / SIGINT; see the module text.  ``on_ready(index, note)`` is called in
    the supervisor when a worker calls :meth:`Worker.ready`; ``on_event(text)`` for each
    worker that dies or is restarted (default: logged as a warning).  Returns 0 after
    SIGTERM, 130 after SIGINT, or the status of a worker that failed at its first start."""
    if workers is None:
        workers = available_cpus()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    say = on_event or (lambda text: log.warning("%s", text))
    r_fd, w_fd = os.pipe()
    os.set_blocking(r_fd, False)
    got: list[int] = []

    def handle(signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            for pid in list(children):
                _kill(pid, signal.SIGHUP)
            return
        got.append(signum)

    children: dict[int, tuple[int, float]] = {}  # pid -> (index, started)
    ever_ready: set[int] = set()
    backoff = [0.0] * workers
    due: dict[int, float] = {}  # index -> when to start it again
    buf = b""

    def spawn(index: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(r_fd)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            _child(target, Worker(index, workers, grace, w_fd))
        children[pid] = (index, time.monotonic())

    old = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT,
                                                        signal.SIGHUP)}
    status = 0
    try:
        for i in range(workers):
            spawn(i)
        while not got:
            try:
                chunk = os.read(r_fd, 4096)
            except BlockingIOError:
                chunk = b""
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                index_text, _, note = line.decode(errors="replace").partition(" ")
                if index_text.isdigit():
                    ever_ready.add(int(index_text))
                    if on_ready:
                        on_ready(int(index_text), note)
            while children:
                try:
                    pid, st = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                index, started = children.pop(pid)
                what = f"worker {index} (pid {pid}) {_describe(st)}"
                if index not in ever_ready:
                    say(f"{what} before it was ready: stopping")
                    code = os.waitstatus_to_exitcode(st)
                    status = code if code > 0 else 1
                    got.append(-1)
                    break
                lived = time.monotonic() - started
                backoff[index] = 0.0 if lived > 30 else min(_BACKOFF_MAX,
                                                            max(0.1, backoff[index] * 2))
                if restart:
                    say(f"{what}; starting it again in {backoff[index]:.1f} s")
                    due[index] = time.monotonic() + backoff[index]
                else:
                    say(what)
            if not restart and not children and not due:
                break
            now = time.monotonic()
            for index, when in list(due.items()):
                if when <= now:
                    del due[index]
                    spawn(index)
            time.sleep(0.05)
    finally:
        try:
            _stop_all(children, grace)  # a second SIGTERM meanwhile changes nothing
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
            os.close(r_fd)
            os.close(w_fd)
    if status:
        return status
    return 130 if signal.SIGINT in got else 0


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _stop_all(children: dict[int, tuple[int, float]], grace: float) -> None:
    """SIGTERM every worker, wait for them (grace + margin), SIGKILL what is left."""
    for pid in children:
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace + KILL_MARGIN
    while children and time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            break
        if pid:
            children.pop(pid, None)
        else:
            time.sleep(0.05)
    for pid in list(children):
        log.warning("worker pid %d still running %.0f s after SIGTERM: killing it", pid,
                    grace + KILL_MARGIN)
        _kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        children.pop(pid, None)
