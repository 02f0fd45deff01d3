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


def available_cpus() -> int:
    """CPUs this process can use: affinity mask, capped by a cgroup CPU quota when one is set."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota() -> float | None:
    """The cgroup CPU limit in CPUs, or None when unlimited / unreadable."""
    try:  # cgroup v2: "max 100000" or "150000 100000"
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as handle:
            quota, period = handle.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", encoding="ascii") as handle:
            quota_us = int(handle.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us", encoding="ascii") as handle:
            period_us = int(handle.read())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


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
