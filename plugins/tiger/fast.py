"""TIGER's single-device fast training loop: the same steps as :func:`genrec_bench.distributed.train_epochs`
(same sample order, batches, loss scaling, schedule and per-epoch mean loss), without a host synchronisation
per step: the epoch's loss sum stays on the device and is read once per epoch, where it is also checked for
NaN/inf. Optional levers (each a ``tiger`` parameter): bf16 autocast on CUDA, torch.compile of the model.

A CPU test (tests/test_tiger_speed.py) checks that it gives the same per-epoch losses and rankings as the plain
loop on a tiny model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from genrec_bench.distributed import DataParallelJob
from genrec_bench.training import EpochCheckpoint


def autocast_dtype(device: torch.device, bf16: bool) -> torch.dtype | None:
    """bf16 on CUDA devices that support it when asked; full precision otherwise (and always on CPU)."""
    if bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def train_fast(
    job: DataParallelJob,
    model: torch.nn.Module,
    rng: torch.Generator,
    device: torch.device,
    end_epoch: Callable[[int, dict, bool], bool],
    bf16: bool = True,
    compile_mode: str | None = None,
    progress: Callable | None = None,
    checkpoint: EpochCheckpoint | None = None,
) -> None:
    """Run ``job`` on ``model`` on one device; ``end_epoch(epoch, record, last)`` as in ``train_epochs``.

    ``compile_mode``: None (eager) or a torch.compile mode ("default", "reduce-overhead": with CUDA graphs, ...).
    ``checkpoint``: resume from its snapshot, and snapshot each epoch that training goes on after.
    """
    optimizer, schedule = job.optimizer(model)
    params = [p for p in model.parameters() if p.requires_grad]
    forward = model if compile_mode is None else torch.compile(model, mode=compile_mode)
    dtype = autocast_dtype(device, bf16)
    done_epochs, step = checkpoint.restore(model, optimizer, schedule, rng) if checkpoint else (0, 0)
    for epoch in range(done_epochs + 1, job.epochs + 1):
        model.train()
        order = job.epoch_order(rng)
        total = torch.zeros((), dtype=torch.float64, device=device)  # summed loss of the epoch, on the device
        count = 0.0
        starts = range(0, len(order), job.batch_size)
        for lo in progress(starts, epoch) if progress else starts:
            if min(job.batch_size, len(order) - lo) < job.min_batch:
                continue
            rows = order[lo : lo + job.batch_size]
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                summed, n = job.summed_loss(forward, rows, device)
            loss = summed.float() * (1.0 / n)  # the scaling train_epochs applies on one process
            total += summed.detach().double()
            count += float(n)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if job.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, job.grad_clip)
            optimizer.step()
            if schedule is not None:
                schedule.step()
            step += 1
            if job.max_steps and step >= job.max_steps:
                break
        mean = float(total) / count if count > 0 else 0.0  # the one host synchronisation of the epoch
        if not math.isfinite(mean):
            job.nonfinite("loss", mean)
        done = bool(job.max_steps and step >= job.max_steps)
        if end_epoch(epoch, {"loss": mean}, done) or done:
            break
        if checkpoint is not None:
            checkpoint.save(epoch, step, model, optimizer, schedule, rng)
