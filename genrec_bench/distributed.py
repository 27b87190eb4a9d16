"""Data-parallel training on several devices of one node: torch.distributed DDP via torch.multiprocessing.spawn.

A generator that supports ``devices > 1`` calls :func:`spawn` with a *picklable, module-level* worker function.
``spawn`` starts ``world_size`` processes (backend ``nccl`` when CUDA devices are available, ``gloo`` on CPU),
sets up the process group on ``127.0.0.1`` and a free port, runs ``fn(rank, world_size, device, *args)`` in each
and returns rank 0's return value to the parent (through a file, so it can be a state_dict of any size).

Inside the worker, :func:`wrap` puts the model into ``DistributedDataParallel`` and :func:`shard` takes this
rank's rows of a global batch: every rank draws the same globally-shuffled order from the same seeded generator
and takes ``global_batch / world_size`` rows of each global batch, so that DDP's averaged gradient is the
gradient of single-process training on the whole batch (when the loss is normalised by the *global* count,
see :func:`global_mean_scale`).
"""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend(use_cuda: bool) -> str:
    return "nccl" if use_cuda else "gloo"


def _worker(rank: int, world_size: int, port: int, use_cuda: bool, threads: int, out: str,
            fn: Callable, args: tuple) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(threads)
    if use_cuda:
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend(use_cuda), rank=rank, world_size=world_size)
    try:
        result = fn(rank, world_size, device, *args)
        if rank == 0:
            torch.save(result, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable, world_size: int, *args, use_cuda: bool | None = None, threads: int = 1) -> Any:
    """Run ``fn(rank, world_size, device, *args)`` in ``world_size`` processes; rank 0's return value.

    ``fn`` must be importable by name (a module-level function) and its arguments picklable.
    """
    if use_cuda is None:
        use_cuda = torch.cuda.is_available()
    if use_cuda and torch.cuda.device_count() < world_size:
        raise RuntimeError(f"devices={world_size} but only {torch.cuda.device_count()} CUDA devices are visible")
    with tempfile.TemporaryDirectory(prefix="genrec-ddp-") as tmp:
        out = str(Path(tmp) / "rank0.pt")
        torch.multiprocessing.spawn(_worker, args=(world_size, free_port(), use_cuda, threads, out, fn, args),
                                    nprocs=world_size, join=True)
        return torch.load(out, map_location="cpu", weights_only=False)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.parallel.DistributedDataParallel:
    """The model on ``device`` inside DistributedDataParallel (one device per process)."""
    model = model.to(device)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shard(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (``ceil(b / world_size)`` rows, the last ones fewer)."""
    per_rank = -(-batch.shape[0] // world_size)
    return batch[rank * per_rank:(rank + 1) * per_rank]


def global_mean_scale(world_size: int, global_count: int) -> float:
    """Multiply a rank's *summed* loss by this to get DDP gradients equal to the global-batch mean loss.

    DDP averages gradients over ranks (divides by ``world_size``), so the per-rank loss is
    ``sum_local * world_size / global_count``.
    """
    return world_size / max(1, global_count)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few floats over ranks (epoch loss totals for logging)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
