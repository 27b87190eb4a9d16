"""Data-parallel training on several devices of one node: torch.distributed DDP via torch.multiprocessing.spawn.

A generator that supports ``devices > 1`` describes its training as a :class:`DataParallelJob` (model, optimizer,
sample order, summed loss of some rows) and calls :func:`train_data_parallel`, which runs the job in every rank
and replays early stopping on rank 0's checkpoints in the parent. Lower level: :func:`spawn` runs any
*picklable, module-level* worker function.
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


class DataParallelJob:
    """One generator's training loop, described so that every DDP rank can run it (subclass at module level).

    Set ``epochs``, ``batch_size``, ``eval_every``, ``seed`` and optionally ``max_steps``; implement the four
    methods. Each rank draws the same global order from the same generator state, takes its shard of every
    global batch of sample indices, and calls :meth:`summed_loss` on it; the sum is scaled by
    ``world_size / global count`` so that DDP's averaged gradient is the single-device mean-loss gradient.
    """

    epochs: int
    batch_size: int
    eval_every: int = 1
    seed: int = 0
    max_steps: int | None = None

    def build_model(self) -> torch.nn.Module:
        """The model, freshly built on CPU (the caller loads the initial weights)."""
        raise NotImplementedError

    def optimizer(self, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        """The optimizer and a learning-rate scheduler (or None), stepped once per global batch."""
        raise NotImplementedError

    def epoch_order(self, rng: torch.Generator) -> torch.Tensor:
        """The sample indices of one epoch, in training order (drawn from ``rng``)."""
        raise NotImplementedError

    def summed_loss(self, model: torch.nn.Module, rows: torch.Tensor, device: torch.device
                    ) -> tuple[torch.Tensor, int]:
        """The loss *summed* over the samples ``rows`` (through ``model``'s forward) and how many terms it sums."""
        raise NotImplementedError


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None


def _run_job(rank: int, world_size: int, device: torch.device, job: DataParallelJob, init_state: dict,
             rng_state: torch.Tensor, checkpoints: str) -> list[float]:
    """One rank of :func:`train_data_parallel`: all epochs; rank 0 saves weights where validation would run."""
    torch.manual_seed(job.seed * 1_000_003 + rank)  # dropout masks differ per rank (as they must)
    model = job.build_model()
    model.load_state_dict(init_state)
    ddp = wrap(model, device)
    optimizer, schedule = job.optimizer(ddp.module)
    rng = torch.Generator()
    rng.set_state(rng_state)
    dtype = _autocast_dtype(device)
    losses, step = [], 0
    for epoch in range(1, job.epochs + 1):
        ddp.train()
        order = job.epoch_order(rng)
        total, count = 0.0, 0.0
        for lo in range(0, len(order), job.batch_size):
            rows, weight = shard(order[lo:lo + job.batch_size], rank, world_size), 1.0
            if rows.numel() == 0:  # fewer rows than ranks: still join the all-reduce, with zero gradient
                rows, weight = order[lo:lo + 1], 0.0
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                summed, n = job.summed_loss(ddp, rows, device)
            summed = summed.float()
            if not torch.isfinite(summed):
                raise RuntimeError(f"rank {rank}: the loss became {summed.item()} at step {step}; lower lr")
            n = n * weight
            global_n = all_reduce_sum([n], device)[0]
            optimizer.zero_grad(set_to_none=True)
            (summed * (weight * world_size / max(1.0, global_n))).backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            total, count, step = total + summed.item() * weight, count + n, step + 1
            if job.max_steps and step >= job.max_steps:
                break
        total, count = all_reduce_sum([total, count], device)
        losses.append(total / max(1.0, count))
        done = bool(job.max_steps and step >= job.max_steps)
        if rank == 0 and (epoch % max(1, job.eval_every) == 0 or epoch == job.epochs or done):
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()},
                       Path(checkpoints) / f"epoch-{epoch}.pt")
        if done:
            break
    return losses


def train_data_parallel(job: DataParallelJob, devices: int, model: torch.nn.Module, rng: torch.Generator,
                        stopper, ctx, name: str) -> None:
    """Train ``model`` with ``job`` on ``devices`` DDP processes, then replay early stopping in epoch order.

    ``model`` gives the initial weights and receives the selected ones. Rank 0 saves the weights at every epoch
    where single-device training would validate; the parent validates them in order with ``stopper`` (an
    :class:`~genrec_bench.training.EarlyStopping` on ``model``), so model selection equals single-device
    training (epochs after the stopping point are trained but ignored). ``stopper.restore()`` is left to the
    caller.
    """
    checkpoints = Path(ctx.work_dir) / f"{name}-ddp"
    checkpoints.mkdir(parents=True, exist_ok=True)
    use_cuda = ctx.device.type == "cuda"
    ctx.logger.info("  %s: training on %d %s processes (DDP, %s)", name, devices, "CUDA" if use_cuda else "CPU",
                    backend(use_cuda))
    init_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    losses = spawn(_run_job, devices, job, init_state, rng.get_state(), str(checkpoints), use_cuda=use_cuda)
    finished_early = bool(job.max_steps) and len(losses) < job.epochs
    for epoch, loss in enumerate(losses, start=1):
        path = checkpoints / f"epoch-{epoch}.pt"
        if path.exists():
            model.load_state_dict(torch.load(path, map_location=ctx.device))
            path.unlink()
        record = {"epoch": epoch, "loss": loss}
        stop = stopper.update(epoch, record, force=finished_early and epoch == len(losses))
        ctx.log_epoch(name, record)
        if stop:
            break
    for path in checkpoints.glob("epoch-*.pt"):  # epochs trained past the stopping point
        path.unlink()
