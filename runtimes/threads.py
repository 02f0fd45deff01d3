"""How many CPUs this process may really use, and how the runtime spends them.

`os.cpu_count()` reports the host's cores, not what a container is allowed: a Knative pod
with `cpu: 1` on a 64-core node would otherwise start 64 ONNX Runtime threads that fight
over one core's quota (throttling, p99 in the hundreds of ms). We read, in order: the
scheduler affinity mask, then the cgroup v2 `cpu.max` (or v1 `cfs_quota_us`) quota.

The plan (documented in the README, "Runtime: batching, back-pressure, metrics, GPUs"):
- the event loop (HTTP parsing, JSON, batching) owns one core;
- ONNX Runtime gets `intra_op_threads` threads per run (bento.yaml; default 1, `0` = the
  CPUs left after the event loop's, at least 1) and one inter-op thread;
- the inference pool runs `1` batch at a time when batching is on (parallelism lives inside
  the op, where it is cheap), or `(cpus - 1) // intra_op` single runs at a time when it is off
  (at least one), so the event loop's core plus pool threads × intra-op threads never exceeds
  the CPUs: no oversubscription (except the unavoidable one run beside the loop on one CPU).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

# Set by the worker supervisor (adapters/workers.py): this worker's share of the CPUs, so that N workers'
# thread plans add up to the machine instead of each planning for all of it.
WORKER_CPUS_ENV = "BENTO_COMPILE_CPUS"


def available_cpus() -> int:
    """CPUs this process can use: affinity mask, capped by a cgroup CPU quota when one is set
    (and by BENTO_COMPILE_CPUS, a worker's share)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    share = os.environ.get(WORKER_CPUS_ENV, "").strip()
    if share.isdigit() and int(share) > 0:
        cpus = min(cpus, int(share))
    return max(1, cpus)


def worker_count_for(cpus: float) -> int:
    """HTTP worker processes for a CPU limit: one per WHOLE CPU (at least one). A fraction does not earn
    a worker: 1.5 CPUs split over two event loops would throttle both."""
    return max(1, int(cpus + 1e-9))


def default_workers() -> int:
    """Workers when neither --workers nor BENTO_COMPILE_WORKERS says: one per whole CPU this process has."""
    try:
        cpus: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cpu_quota()
    if quota is not None:
        cpus = min(cpus, quota)
    return worker_count_for(cpus)


def cpu_quota() -> float | None:
    """The cgroup CPU limit in CPUs, or None when unlimited / unreadable."""
    limits = []
    for path in _cgroup_v2_cpu_max_files():  # cgroup v2: "max 100000" or "150000 100000"
        try:
            with open(path, encoding="ascii") as handle:
                quota, period = handle.read().split()[:2]
            if quota != "max":
                limits.append(int(quota) / int(period))
        except (OSError, ValueError):
            continue
    if limits:
        return min(limits)
    try:  # cgroup v1
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", encoding="ascii") as handle:
            quota_us = int(handle.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us", encoding="ascii") as handle:
            period_us = int(handle.read())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def _cgroup_v2_cpu_max_files() -> list[str]:
    """cpu.max of this process's own cgroup and its ancestors (a systemd unit's CPUQuota= lives there,
    not at the root), then the root of the mount (a container's namespace puts its limit there)."""
    files = []
    try:
        with open("/proc/self/cgroup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("0::/"):
                    parts = [p for p in line.strip()[3:].split("/") if p]
                    if ".." not in parts:
                        files += [f"/sys/fs/cgroup/{'/'.join(parts[:n])}/cpu.max" for n in range(len(parts), 0, -1)]
    except OSError:
        pass
    files.append("/sys/fs/cgroup/cpu.max")
    return files


@dataclass(frozen=True)
class ThreadPlan:
    cpus: int
    intra_op_threads: int
    inference_workers: int

    def to_dict(self) -> dict[str, int]:
        return {"cpus": self.cpus, "intra_op_threads": self.intra_op_threads,
                "inference_workers": self.inference_workers}


def plan_threads(intra_op_setting: int, batching: bool, cpus: int | None = None) -> ThreadPlan:
    """Turn `runtime.intra_op_threads` and the batching mode into thread counts (see module doc)."""
    cpus = cpus or available_cpus()
    env = os.environ.get("BENTO_COMPILE_INTRA_OP_THREADS")
    if env and env.isdigit():
        intra_op_setting = int(env)
    intra = intra_op_setting if intra_op_setting > 0 else max(1, cpus - 1)
    intra = min(intra, cpus)
    workers = 1 if batching else max(1, (cpus - 1) // intra)  # the event loop keeps its core
    return ThreadPlan(cpus=cpus, intra_op_threads=intra, inference_workers=workers)
