"""Several HTTP worker processes on one port: every core used for parsing, JSON and batching.

One server process is one event loop and one GIL: a 4-vCPU container or a 6-core board cannot use
what it has for the HTTP side. With `serve --workers N` (or BENTO_COMPILE_WORKERS; default one per
WHOLE CPU of the process's real quota, runtimes/threads.py) this supervisor starts N copies of
`python -m bento_compile.adapters.server`, each with its own model session and its share of the CPUs
for its thread plan (BENTO_COMPILE_CPUS), and:

- the supervisor binds the port once and hands the listening socket to every worker, which
  accept from its one queue (a busy worker is not in accept(): a free one takes the next; the supervisor is never in the
  request path). Not SO_REUSEPORT: there each worker has an accept queue of its own, and a
  worker that closes its socket on SIGTERM resets the handshakes still in flight to it (Linux
  moves them to a sibling only with the net.ipv4.tcp_migrate_req sysctl, off by default and not
  settable in a container): seen here as a reset request during a drain under load;
- SIGTERM (or SIGINT) to the supervisor: it closes its own copy of the socket and passes ONE
  SIGTERM to every worker; each drains as a single server does (adapters/server.py: what is queued
  accepted, in-flight requests finished), and the socket closes, like a single server's, when the
  last worker lets it go. The supervisor exits 0 when all have drained;
- /metrics, whichever worker answers, sums every worker's values (prometheus-client's
  multiprocess mode over a folder made for this run, runtimes/metrics.py), and so do the drift figures
  (/monitoring and the bento_feature_* gauges): each worker publishes its window to a file of its own in
  that folder and the answering one sums them (runtimes/monitoring_share.py; a sibling's part is at most
  half a second old);
- a worker that dies is restarted, unless it died within its first seconds (a Bento that cannot
  load): then everything stops with its exit code, instead of a restart loop;
- each worker logs its resident memory once its model is loaded (N workers hold N sessions);
- the in-flight limit (BENTO_COMPILE_MAX_CONCURRENCY, Knative's containerConcurrency) is the
  container's: it is split over the workers so that their limits add up to it, and there are never
  more workers than requests allowed in flight;
- worker 1 loads as configured; the others load before accepting (a request never waits for a
  sibling's model while another worker is ready).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bento_compile.runtimes.manifest import read_manifest
from bento_compile.runtimes.metrics import MULTIPROCESS_ENV
from bento_compile.runtimes.monitoring_share import SHARE_ENV
from bento_compile.runtimes.threads import WORKER_CPUS_ENV, available_cpus, default_workers

log = logging.getLogger("bento_compile.server")

WORKERS_ENV = "BENTO_COMPILE_WORKERS"
_WORKER_ID_ENV = "BENTO_COMPILE_WORKER_ID"  # set in each worker by the supervisor
_LISTEN_FD_ENV = "BENTO_COMPILE_LISTEN_FD"  # the listening socket the supervisor handed down
_SUPERVISOR_ENV = "BENTO_COMPILE_SUPERVISOR_PID"
_MAX_WORKERS = 256
_EARLY_DEATH_S = 10.0  # a worker that dies this soon after its start is broken, not unlucky


def worker_count(setting: int | None = None, bento_dir: str | None = None) -> int:
    """--workers, else BENTO_COMPILE_WORKERS, else one per whole CPU (inside a worker: always 1).

    The default is one worker for a Bento that will run on a GPU: each worker would open its own
    CUDA session (and its own copy of the weights in GPU memory) to share one device."""
    if is_worker():
        return 1
    if setting is None:
        env = os.environ.get(WORKERS_ENV, "").strip()
        if not env or env == "auto":
            return 1 if bento_dir is not None and wants_gpu(bento_dir) else default_workers()
        if not env.isdigit():
            raise SystemExit(f"{WORKERS_ENV} must be a whole number of worker processes (or auto), got {env[:40]!r}")
        setting = int(env)
    if not 1 <= setting <= _MAX_WORKERS:
        raise SystemExit(f"the worker count must be between 1 and {_MAX_WORKERS}, got {setting} "
                         f"(--workers / {WORKERS_ENV})")
    return setting


def wants_gpu(bento_dir: str) -> bool:
    """Whether the Bento's session would open on CUDA/TensorRT here, decided without importing onnxruntime."""
    from importlib.metadata import PackageNotFoundError, distribution

    device = os.environ.get("BENTO_COMPILE_DEVICE", "").strip()
    if not device:
        try:
            device = read_manifest(Path(bento_dir)).runtime.device
        except Exception:  # no readable Bento: the workers say why
            return False
    if device == "cpu":
        return False
    try:  # the GPU wheel is the only one with CUDA; "auto" uses it when installed
        distribution("onnxruntime-gpu")
    except PackageNotFoundError:
        return False
    return True


def is_worker() -> bool:
    return bool(os.environ.get(_WORKER_ID_ENV))


def worker_load_mode(configured: str) -> str:
    """Worker 1 loads as configured (background: /healthz at once, like a single server); the others load
    BEFORE they accept, so a connection never waits on a sibling's load while a loaded worker is idle.
    They accept from the same socket, so until they are up worker 1 takes everything."""
    if configured == "background" and os.environ.get(_WORKER_ID_ENV, "1") != "1":
        return "eager"
    return configured


def listening_socket(host: str, port: int) -> socket.socket:
    """The one listening socket every worker accepts from (inherited by them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def inherited_socket() -> socket.socket | None:
    """In a worker: the supervisor's listening socket."""
    fd = os.environ.get(_LISTEN_FD_ENV, "")
    return socket.socket(fileno=int(fd)) if fd.isdigit() else None


def log_memory() -> None:
    """Resident memory once the model is loaded: what each worker costs (one session each)."""
    rss = _rss_bytes()
    if rss is not None:
        worker = os.environ.get(_WORKER_ID_ENV)
        who = f"worker {worker} (pid {os.getpid()})" if worker else f"pid {os.getpid()}"
        log.info("%s: %.0f MiB resident with the model loaded", who, rss / (1 << 20))


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def die_with_supervisor() -> None:
    """A worker must not outlive a supervisor that was killed outright (SIGKILL, OOM): Linux's
    parent-death signal turns that into the SIGTERM every worker drains on."""
    supervisor = os.environ.get(_SUPERVISOR_ENV, "")
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if supervisor.isdigit() and os.getppid() != int(supervisor):  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def supervise(bento_dir: str, host: str, port: int, load_mode: str, log_level: str,
              grace_seconds: float | None, count: int) -> int:
    """Run `count` workers until SIGTERM/SIGINT; the exit code (0 when all drained cleanly)."""
    log_to_stderr(log_level)
    try:
        listener = listening_socket(host, port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s (pick another --port, or stop what uses it)", host, port, exc)
        return 1
    port = listener.getsockname()[1]  # port 0: the one the system picked
    limit = _concurrency_limit(bento_dir)
    if limit:  # more workers than requests allowed in flight would only sit idle
        count = min(count, limit)
    metrics_dir, owned = _metrics_dir()
    cpus = max(1, available_cpus() // count)
    env = {**os.environ, "BENTO_COMPILE_BENTO": str(bento_dir), "HOST": host, "PORT": str(port),
           "BENTO_COMPILE_LOAD": load_mode, "LOG_LEVEL": log_level, WORKERS_ENV: "1", WORKER_CPUS_ENV: str(cpus),
           MULTIPROCESS_ENV: str(metrics_dir), SHARE_ENV: str(_monitoring_dir(metrics_dir)),
           _SUPERVISOR_ENV: str(os.getpid()),
           _LISTEN_FD_ENV: str(listener.fileno())}
    if grace_seconds is not None:
        env["BENTO_COMPILE_GRACE_SECONDS"] = str(grace_seconds)
    command = [sys.executable, *(["-I"] if sys.flags.isolated else []), "-m", "bento_compile.adapters.server"]
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        if not stopping:
            stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    workers: dict[int, tuple[subprocess.Popen, float]] = {}
    exit_code = 0
    log.info("starting %d worker(s) on http://%s:%d (%d CPU(s) each for their thread plans)", count, host, port, cpus)
    try:
        # Knative's containerConcurrency is the whole container's: the workers' own limits add up to it.
        envs = [{**env, "BENTO_COMPILE_MAX_CONCURRENCY": str(share)} if limit else env
                for share in concurrency_shares(limit, count)]
        if limit:
            log.info("in-flight limit %d for the server: %s per worker", limit,
                     "+".join(str(share) for share in concurrency_shares(limit, count)))
        for index in range(count):
            workers[index] = _start(command, envs[index], index, listener)
        while workers and not stopping:
            for index, (proc, started) in list(workers.items()):
                code = proc.poll()
                if code is None:
                    continue
                _forget(metrics_dir, proc.pid)
                if time.monotonic() - started < _EARLY_DEATH_S:
                    log.error("worker %d exited with %d right after starting: stopping the server", index, code)
                    exit_code = code or 1
                    stopping.append(signal.SIGTERM)
                    del workers[index]
                    break
                log.warning("worker %d (pid %d) exited with %d: starting it again", index, proc.pid, code)
                workers[index] = _start(command, envs[index], index, listener)
            time.sleep(0.1)
        # The workers hold the socket now: the last one to drain closes it, as a single server does.
        listener.close()
        # Each worker is told once: a second signal makes uvicorn abandon its in-flight requests.
        for proc, _started in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for index, (proc, _started) in workers.items():
            code = _wait(proc)
            _forget(metrics_dir, proc.pid)
            # Killed by the SIGTERM itself: it was still loading, before uvicorn's handlers (installed
            # before it accepts anything), so it had no request to lose.
            if code not in (0, -signal.SIGTERM):
                log.error("worker %d exited with %d while stopping", index, code)
                exit_code = exit_code or code or 1
    finally:
        for proc, _started in workers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        listener.close()
        if owned:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return exit_code


def concurrency_shares(limit: int, count: int) -> list[int]:
    """The in-flight limit split over the workers so that their limits add up to it exactly (0: none)."""
    if not limit:
        return [0] * count
    return [limit // count + (1 if index < limit % count else 0) for index in range(count)]


def _concurrency_limit(bento_dir: str) -> int:
    """The container's in-flight limit (BENTO_COMPILE_MAX_CONCURRENCY, else runtime.max_concurrency)."""
    env = os.environ.get("BENTO_COMPILE_MAX_CONCURRENCY", "").strip()
    if env:
        return int(env) if env.isdigit() else 0  # not a number: each worker refuses it with the reason
    try:
        return read_manifest(Path(bento_dir)).runtime.max_concurrency
    except Exception:  # no readable Bento: the workers say why
        return 0


def _start(command: list[str], env: dict[str, str], index: int,
           listener: socket.socket) -> tuple[subprocess.Popen, float]:
    # Its own session: a terminal's Ctrl-C reaches the supervisor only, which passes ONE SIGTERM on.
    proc = subprocess.Popen(command, env={**env, _WORKER_ID_ENV: str(index + 1)}, start_new_session=True,
                            pass_fds=(listener.fileno(),))
    return proc, time.monotonic()


def _wait(proc: subprocess.Popen) -> int:
    """Wait for a draining worker (its own grace bounds it); a signal here must not cut the wait short."""
    while True:
        try:
            return proc.wait()
        except InterruptedError:
            continue


def _metrics_dir() -> tuple[Path, bool]:
    """The multiprocess metrics folder: the one set in PROMETHEUS_MULTIPROC_DIR (emptied of a previous
    run's files, which would otherwise be summed in), else a fresh one removed at exit."""
    configured = os.environ.get(MULTIPROCESS_ENV, "").strip()
    if configured:
        folder = Path(configured)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink(missing_ok=True)
        return folder, False
    return Path(tempfile.mkdtemp(prefix="bento-metrics-")), True


def _monitoring_dir(metrics_dir: Path) -> Path:
    """Where the workers publish their drift windows (runtimes/monitoring_share.py), emptied of a previous
    run's files, which the answering worker would otherwise sum in."""
    folder = metrics_dir / "monitoring"
    folder.mkdir(exist_ok=True)
    for stale in folder.glob("window-*.bin"):
        stale.unlink(missing_ok=True)
    return folder


def _forget(metrics_dir: Path, pid: int) -> None:
    """A dead worker's live gauges (in flight, queue depth) must not be summed in any more."""
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(metrics_dir))
    except Exception:  # prometheus-client missing, or the files already gone: nothing to forget
        pass


def log_to_stderr(level: str) -> None:
    """The runtime's own lines (model loaded, device and providers in use, thread plan, workers) next to
    uvicorn's, for the supervisor and for each server process."""
    logger = logging.getLogger("bento_compile")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level.upper())

