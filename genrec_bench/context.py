"""What a running cell hands to its plugins: device, seed, cache and work folders, progress bars."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")


@dataclass
class RunContext:
    device: torch.device
    seed: int
    cache_dir: Path
    work_dir: Path
    show_progress: bool = True
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("genrec_bench"))
    #: the protocol's ``precision``: auto (bf16 on CUDA; on the CPU only on paths measured faster there, with
    #: AMX or AVX512-BF16), fp32 (never autocast) or bf16 (always, CPU included)
    precision: str = "auto"
    #: the autocast dtypes the plugins asked for ("fp32" for full precision), recorded in result.json
    dtypes_used: set[str] = field(default_factory=set)
    #: where a long training loop keeps its epoch snapshots so that an interrupted cell resumes
    #: (``training.EpochCheckpoint``); kept until the cell is written. None: no snapshots
    resume_dir: Path | None = None
    #: the cell's identity (configuration and data digest): a snapshot of another identity is not resumed
    identity: str = ""

    def progress(self, iterable: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
        """A tqdm bar when progress is shown, else the iterable itself."""
        if not self.show_progress:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)

    def log_epoch(self, name: str, record: dict) -> None:
        """One readable log line per training epoch: ``sasrec epoch 3: loss 5.7312, valid 0.0812``."""
        shown = ", ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items() if k != "epoch"
        )
        self.logger.info("  %s epoch %s: %s", name, record.get("epoch", "?"), shown)

    def torch_generator(self, offset: int = 0) -> torch.Generator:
        """A seeded CPU random generator, so that a cell repeats exactly."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + offset)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of a path not measured faster in bf16 on the CPU (see :meth:`compute_dtype`)."""
        return self.compute_dtype(cpu_bf16_pays=False)

    def compute_dtype(self, cpu_bf16_pays: bool = False) -> torch.dtype | None:
        """The autocast dtype for this cell's ``precision``; None means full precision.

        ``cpu_bf16_pays``: the calling path has a side-by-side measurement showing bf16 autocast faster on a CPU
        with bf16 units (``benchmarks/scripts/precision_compare.py``); only then does ``auto`` use bf16 on the
        CPU.
        """
        dtype = resolve_precision(self.precision, self.device, cpu_bf16_pays)
        self.dtypes_used.add("bf16" if dtype is torch.bfloat16 else "fp32")
        return dtype


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: torch.device, cpu_bf16_pays: bool) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cpu" and cpu_bf16_pays and cpu_has_bf16_units() else None


@functools.cache
def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX512-BF16; read from /proc/cpuinfo on Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
