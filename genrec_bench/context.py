"""What a running cell hands to its plugins: device, seed, cache and work folders, progress bars."""

from __future__ import annotations

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
        """bf16 autocast on CUDA devices that support it; None (full precision) elsewhere."""
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
