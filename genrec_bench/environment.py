"""Seeds, device choice and the environment record kept with every cell."""

from __future__ import annotations

import math
import os
import platform
import random
import statistics
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError

#: Set to 0 to allow PyTorch's faster non-deterministic kernels (results then vary slightly between runs).
DETERMINISTIC_ENV = "GENREC_BENCH_DETERMINISTIC"


#: Thread count for every cell (overridden by ``genrec-bench run --threads N``); default: chosen from the machine.
THREADS_ENV = "GENREC_BENCH_THREADS"
#: Environment variables that size the thread pools of subprocesses (OpenMP, MKL, OpenBLAS, numexpr).
POOL_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass
class ThreadChoice:
    """How many threads the process uses, and why."""

    threads: int
    source: str  # "--threads", GENREC_BENCH_THREADS or "auto"
    cpu_count: int | None  # os.cpu_count(): every core of the machine
    cpus_available: int  # affinity mask and cgroup quota
    busy_others: int  # other busy processes seen when choosing ("auto" only)
    load_average: float | None  # 1-minute load average when choosing
    interop_threads: int | None = None  # torch's inter-op pool (None: could not be set, work had already run)


_CHOICE: ThreadChoice | None = None


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max``, v1 ``cpu/cpu.cfs_quota_us``), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def cpus_available(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may run on: its affinity mask, capped by the cgroup CPU quota (rounded up), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def busy_others(samples: int = 5, interval: float = 0.02, proc_loadavg: Path = Path("/proc/loadavg")) -> int:
    """Other runnable threads now: the median of ``/proc/loadavg``'s running count minus this process's one.

    The 1-minute load average lags a process that just started by a minute; the running count does not.
    """
    counts = []
    for i in range(samples):
        try:
            counts.append(int(proc_loadavg.read_text().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return 0
        if i + 1 < samples:
            time.sleep(interval)
    return max(0, int(statistics.median(counts)))


def choose_threads(requested: int | None = None, environ: Mapping[str, str] | None = None) -> ThreadChoice:
    """``requested`` (``--threads``), else ``GENREC_BENCH_THREADS``, else the free cores.

    Auto: the available cores (affinity, cgroup quota) less the other busy processes (at least 1). Thread pools
    larger than the free cores lose far more than they gain: PyTorch's OpenMP threads meet at a barrier after
    every parallel op, so one preempted thread stalls all of them (benchmarks/scripts/busy_machine.py).
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    available = cpus_available()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    others = busy_others()  # recorded whatever sets the count: how busy the machine was when the run began
    if requested is not None:
        threads, source = requested, "--threads"
    elif env.get(THREADS_ENV, "").strip():
        value = env[THREADS_ENV].strip()
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"{THREADS_ENV}={value!r}: expected a positive integer")
        threads, source = int(value), THREADS_ENV
    else:
        threads, source = max(1, available - others), "auto"
    if threads < 1:
        raise ConfigError(f"--threads {threads}: expected a positive integer")
    return ThreadChoice(threads, source, os.cpu_count(), available, others, load)


def configure_threads(requested: int | None = None) -> ThreadChoice:
    """Choose the thread count (see ``choose_threads``) and apply it: torch's intra- and inter-op pools and the
    pool sizes subprocesses inherit (OMP/MKL/OpenBLAS). Call once, before any parallel work: torch's inter-op
    pool can only be sized before its first use (then ``interop_threads`` stays None)."""
    global _CHOICE
    choice = choose_threads(requested)
    for name in POOL_ENV:
        os.environ[name] = str(choice.threads)
    torch.set_num_threads(choice.threads)
    try:
        torch.set_num_interop_threads(choice.threads)
        choice.interop_threads = choice.threads
    except RuntimeError:  # inter-op work already ran in this process
        choice.interop_threads = None
    _CHOICE = choice
    return choice


def thread_choice() -> ThreadChoice | None:
    """The choice made by ``configure_threads`` in this process (None when it was not called)."""
    return _CHOICE


def deterministic() -> bool:
    return os.environ.get(DETERMINISTIC_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; switch on deterministic kernels unless GENREC_BENCH_DETERMINISTIC=0.

    Without them, multi-threaded CPU reductions (index_add_, scatter) sum in a thread-dependent order: e.g. an
    RQ-VAE fitted twice with the same seed on 2 threads gave different codes for every item. With them, a cell
    repeats exactly on the same machine and thread count (ops that have no deterministic kernel only warn).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's requirement for repeatable GEMMs
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(False)


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run a block on its own RNGs (Python, NumPy, torch CPU and CUDA) seeded with ``seed``, then give the caller
    its own streams back untouched: a cached artifact (item features) then leaves the cell's random numbers the
    same whether it was computed here or loaded."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def choose_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cpu``/``cuda``/``cuda:1`` force a device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: '{name}' is not a device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: '{name}' was asked for but no CUDA device is visible; use device: auto or cpu")
    return device


def git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``): timings and the
    ``precision: auto`` choice depend on it, so every result records it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device) -> dict:
    from . import __version__
    from .context import cpu_has_bf16_units

    info: dict[str, Any] = {
        "genrec_bench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the widest SIMD set ATen dispatches to
        "cpu_bf16_units": cpu_has_bf16_units(),  # AMX or AVX512-BF16: what precision auto needs for bf16
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpus_available": cpus_available(),
        "deterministic": deterministic(),
        "device": str(device),
        "git_commit": git_commit(Path(__file__).resolve().parent),
    }
    if _CHOICE is not None:
        info["threads"] = asdict(_CHOICE)
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process (and peak CUDA allocation) so far."""
    import resource

    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
