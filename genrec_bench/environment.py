"""Seeds, device choice and the environment record kept with every cell."""
from __future__ import annotations

import os
import platform
import random
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .errors import ConfigError


#: Set to 0 to allow PyTorch's faster non-deterministic kernels (results then vary slightly between runs).
DETERMINISTIC_ENV = "GENREC_BENCH_DETERMINISTIC"


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


def describe(device: torch.device) -> dict:
    from . import __version__

    info = {
        "genrec_bench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "deterministic": deterministic(),
        "device": str(device),
        "git_commit": git_commit(Path(__file__).resolve().parent),
    }
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
