"""Data-parallel training on several devices of one node: torch.distributed DDP via torch.multiprocessing.spawn.

A generator that supports ``devices > 1`` describes its training as a :class:`DataParallelJob` (model, optimizer,
sample order, summed loss of some rows) and calls :func:`train_data_parallel`, which runs the job in every rank
and replays early stopping on rank 0's checkpoints in the parent. Lower level: :func:`spawn` runs any
*picklable, module-level* worker function.
``spawn`` starts ``world_size`` processes (backend ``nccl`` when CUDA devices are available, ``gloo`` on CPU),
sets up the process group on ``127.0.0.1`` and a free port, runs ``fn(rank, world_size, device, *args)`` in each
and returns rank 0's return value to the parent (through a file, so it can be a state_dict of any size).

Inside the worker, :func:`wrap` puts the model into ``DistributedDataParallel`` and :func:`shard_of` takes this
rank's rows of a global batch: every rank draws the same globally-shuffled order (and the same per-sample random
draws) from the same seeded generator and takes ``global_batch / world_size`` rows of each global batch; each
loss term is normalised by its *global* count (:func:`train_epochs`), so that DDP's averaged gradient is the
gradient of single-process training on the whole batch.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .errors import TrainingError
from .training import EarlyStopping, EpochCheckpoint


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend(use_cuda: bool) -> str:
    return "nccl" if use_cuda else "gloo"


def _worker(
    rank: int, world_size: int, port: int, use_cuda: bool, threads: int, out: str, fn: Callable, args: tuple
) -> None:
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
        torch.multiprocessing.spawn(
            _worker, args=(world_size, free_port(), use_cuda, threads, out, fn, args), nprocs=world_size, join=True
        )
        return torch.load(out, map_location="cpu", weights_only=False)


def wrap(model: torch.nn.Module, device: torch.device, **options) -> torch.nn.parallel.DistributedDataParallel:
    """The model on ``device`` inside DistributedDataParallel (one device per process); ``options`` go to DDP."""
    model = model.to(device)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, **options)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few floats over ranks (epoch loss totals for logging)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


@dataclass
class Term:
    """One loss term of a training step: a *sum* over this rank's samples and how many terms it sums
    (``count``), or a value already computed over the whole global batch (``count`` None, e.g. from
    :func:`gather_rows`). The step's loss is ``sum(weight * global mean)`` over the terms."""

    name: str
    value: torch.Tensor
    count: float | None = None
    weight: float = 1.0


@dataclass
class Shard:
    """This rank's slice ``[lo, hi)`` of a global batch of sample indices."""

    batch: torch.Tensor
    lo: int
    hi: int
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.hi > self.lo

    @property
    def rows(self) -> torch.Tensor:
        """This rank's sample indices; a stand-in row (weighted zero) when the batch has fewer rows than ranks."""
        return self.batch[self.lo : self.hi] if self.active else self.batch[:1]

    def take(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor drawn for the whole batch (``k`` rows per sample stay together)."""
        k = tensor.shape[0] // max(1, len(self.batch))
        lo, hi = (self.lo, self.hi) if self.active else (0, 1)
        return tensor[lo * k : hi * k]


def shard_of(batch: torch.Tensor, rank: int, world_size: int) -> Shard:
    """This rank's contiguous slice of a global batch (``ceil(b / world_size)`` rows, the last ones fewer)."""
    per_rank = -(-len(batch) // world_size)
    lo = min(rank * per_rank, len(batch))
    return Shard(batch, lo, min(lo + per_rank, len(batch)), world_size)


def gather_rows(x: torch.Tensor, shard: Shard) -> torch.Tensor:
    """Every rank's rows of ``x`` in global-batch order, differentiable (for batch-level losses); identity on one
    process. Backward sums the gradients of all ranks, so a batch-level term enters the loss with weight 1."""
    if shard.world_size == 1:
        return x
    per_rank = -(-len(shard.batch) // shard.world_size)
    mine = x[: shard.hi - shard.lo]
    padded = torch.cat([mine, mine.new_zeros((per_rank - mine.shape[0], *mine.shape[1:]))])
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(padded))[: len(shard.batch)]


class DataParallelJob:
    """One generator's training loop, described so that one process or every DDP rank can run it.

    Set ``epochs``, ``batch_size``, ``eval_every``, ``seed`` and optionally ``max_steps`` and ``grad_clip``;
    implement ``build_model``, ``optimizer``, ``epoch_order`` and either ``summed_loss`` (one term) or
    ``loss_terms``. Every rank draws the same global order (and any per-sample random draws) from the same
    generator state and computes the loss of its shard of each global batch; :func:`train_epochs` scales each
    term by its global count, so that DDP's averaged gradient is the single-device gradient of the whole batch.
    Subclasses that DDP spawns must be defined at module level (pickled).
    """

    epochs: int
    batch_size: int
    eval_every: int = 1
    seed: int = 0
    max_steps: int | None = None
    grad_clip: float = 0.0
    min_batch: int = 1  # smaller global batches (the tail of an epoch) are skipped
    ddp_options: dict = {}
    #: autocast dtype of every rank's steps ("default": bf16 on CUDA devices that support it, else full precision)
    dtype: torch.dtype | None | str = "default"

    def build_model(self, device: torch.device) -> torch.nn.Module:
        """The model on ``device`` (the caller loads the initial weights); its forward is what DDP wraps."""
        raise NotImplementedError

    def optimizer(self, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        """The optimizer and a learning-rate scheduler (or None), stepped once per global batch."""
        raise NotImplementedError

    def epoch_order(self, rng: torch.Generator) -> torch.Tensor:
        """The sample indices of one epoch, in training order (drawn from ``rng``)."""
        raise NotImplementedError

    def summed_loss(
        self, model: torch.nn.Module, rows: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, float]:
        """The loss summed over the samples ``rows`` (through ``model``'s forward) and how many terms it sums."""
        raise NotImplementedError

    def loss_terms(
        self, model: torch.nn.Module, shard: Shard, device: torch.device, rng: torch.Generator
    ) -> list[Term]:
        """The step's loss terms; draw per-sample randomness for the whole ``shard.batch`` and ``shard.take``."""
        summed, count = self.summed_loss(model, shard.rows, device)
        return [Term("loss", summed, count)]

    def nonfinite(self, name: str, value: float) -> None:
        """Called when a term becomes NaN or infinite: raise a clear error."""
        raise TrainingError(f"the {name} loss became {value}; lower the learning rate")


def train_epochs(
    job: DataParallelJob,
    model: torch.nn.Module,
    rng: torch.Generator,
    device: torch.device,
    end_epoch: Callable[[int, dict, bool], bool],
    rank: int = 0,
    world_size: int = 1,
    progress: Callable | None = None,
    dtype: torch.dtype | None | str = "default",
    checkpoint: EpochCheckpoint | None = None,
) -> None:
    """Run ``job`` on ``model`` (DDP-wrapped when ``world_size > 1``); ``end_epoch(epoch, record, last)`` gets the
    epoch's mean losses plus its ``samples`` and optimizer ``steps``, and returns True to stop (``last``:
    max_steps ended training in this epoch). ``dtype``: the autocast dtype (None: full precision); "default" is
    bf16 on CUDA devices that support it, full precision elsewhere. ``checkpoint`` (one process only): resume
    from its snapshot, and snapshot each epoch that training goes on after."""
    inner = getattr(model, "module", model)
    optimizer, schedule = job.optimizer(inner)
    params = [p for p in inner.parameters() if p.requires_grad]
    if dtype == "default":
        dtype = _autocast_dtype(device)
    assert dtype is None or isinstance(dtype, torch.dtype)
    if checkpoint is not None and world_size > 1:
        raise ValueError("train_epochs: checkpoint is for one process (world_size 1)")
    done_epochs, step = checkpoint.restore(inner, optimizer, schedule, rng) if checkpoint else (0, 0)
    for epoch in range(done_epochs + 1, job.epochs + 1):
        model.train()
        order = job.epoch_order(rng)
        sums: dict[str, list[float]] = {}  # term -> [global sum, global count] over the epoch
        weights: dict[str, float] = {}
        samples, epoch_steps = 0, 0
        starts = range(0, len(order), job.batch_size)
        for lo in progress(starts, epoch) if progress else starts:
            if min(job.batch_size, len(order) - lo) < job.min_batch:
                continue
            shard = shard_of(order[lo : lo + job.batch_size], rank, world_size)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                terms = job.loss_terms(model, shard, device, rng)
            loss, totals = _combine(terms, shard, device)
            for name, (total, count) in totals.items():
                value = total / count if count > 0 else 0.0
                if not math.isfinite(value):
                    job.nonfinite(name, value)
                acc = sums.setdefault(name, [0.0, 0.0])
                acc[0], acc[1] = acc[0] + total, acc[1] + count
            weights.update({t.name: t.weight for t in terms})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if job.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, job.grad_clip)
            optimizer.step()
            if schedule is not None:
                schedule.step()
            step += 1
            samples, epoch_steps = samples + len(shard.batch), epoch_steps + 1
            if job.max_steps and step >= job.max_steps:
                break
        record = {name: total / count if count > 0 else 0.0 for name, (total, count) in sums.items()}
        if list(record) != ["loss"]:
            record["loss"] = sum(weights[name] * value for name, value in record.items())
        record.update(samples=samples, steps=epoch_steps)
        done = bool(job.max_steps and step >= job.max_steps)
        if end_epoch(epoch, record, done) or done:
            break
        if checkpoint is not None:
            checkpoint.save(epoch, step, inner, optimizer, schedule, rng)


def _combine(
    terms: list[Term], shard: Shard, device: torch.device
) -> tuple[torch.Tensor, dict[str, tuple[float, float]]]:
    """The loss to back-propagate on this rank, and every term's global (sum, count) for the step
    (a batch-level term counts as its value times the batch's rows)."""
    local = [t for t in terms if t.count is not None]
    counts = [float(t.count) for t in terms if t.count is not None]  # aligned with local
    stats = [float(t.value.detach()) for t in local] + counts
    if not shard.active:
        stats = [0.0] * len(stats)
    if shard.world_size > 1:
        stats = all_reduce_sum(stats, device)
    loss = torch.zeros((), device=device)
    totals: dict[str, tuple[float, float]] = {}
    for t, total, count in zip(local, stats[: len(local)], stats[len(local) :], strict=True):
        scale = shard.world_size / count if count > 0 and shard.active else 0.0
        loss = loss + t.weight * t.value.float() * scale
        totals[t.name] = (total, count)
    rows = float(len(shard.batch))
    for t in terms:
        if t.count is None:
            loss = loss + t.weight * t.value.float()
            totals[t.name] = (float(t.value.detach()) * rows, rows)
    return loss, totals


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None


def _run_job(
    rank: int,
    world_size: int,
    device: torch.device,
    job: DataParallelJob,
    init_state: dict,
    rng_state: torch.Tensor,
    checkpoints: str,
) -> list[dict]:
    """One rank of :func:`train_data_parallel`: all epochs; rank 0 saves weights where validation would run."""
    torch.manual_seed(job.seed * 1_000_003 + rank)  # dropout masks differ per rank (as they must)
    model = job.build_model(device)
    model.load_state_dict(init_state)
    ddp = wrap(model, device, **job.ddp_options)
    rng = torch.Generator()
    rng.set_state(rng_state)
    records: list[dict] = []

    def end_epoch(epoch: int, record: dict, last: bool) -> bool:
        records.append(record)
        if rank == 0 and (epoch % max(1, job.eval_every) == 0 or epoch == job.epochs or last):
            torch.save(
                {k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(checkpoints) / f"epoch-{epoch}.pt"
            )
        return False

    train_epochs(job, ddp, rng, device, end_epoch, rank, world_size, dtype=job.dtype)
    return records


def train_data_parallel(
    job: DataParallelJob,
    devices: int,
    model: torch.nn.Module,
    rng: torch.Generator,
    ctx,
    name: str,
    end_epoch: Callable[[int, dict, bool], bool],
) -> None:
    """Train ``model`` with ``job`` on ``devices`` DDP processes, then replay the epochs through ``end_epoch``.

    ``model`` gives the initial weights and receives the trained ones. Rank 0 saves the weights at every epoch
    where single-device training would validate; the parent loads them in epoch order and calls
    ``end_epoch(epoch, record, last)`` (which validates, e.g. with EarlyStopping), so model selection equals
    single-device training; epochs after the stopping point are trained but ignored.
    """
    checkpoints = Path(ctx.work_dir) / f"{name}-ddp"
    checkpoints.mkdir(parents=True, exist_ok=True)
    use_cuda = ctx.device.type == "cuda"
    ctx.logger.info(
        "  %s: training on %d %s processes (DDP, %s)", name, devices, "CUDA" if use_cuda else "CPU", backend(use_cuda)
    )
    init_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    records = spawn(_run_job, devices, job, init_state, rng.get_state(), str(checkpoints), use_cuda=use_cuda)
    finished_early = bool(job.max_steps) and len(records) < job.epochs
    for epoch, record in enumerate(records, start=1):
        path = checkpoints / f"epoch-{epoch}.pt"
        if path.exists():
            model.load_state_dict(torch.load(path, map_location=ctx.device))
            path.unlink()
        if end_epoch(epoch, record, finished_early and epoch == len(records)):
            break
    for path in checkpoints.glob("epoch-*.pt"):  # epochs trained past the stopping point
        path.unlink()


def fit_early_stopped(
    job: DataParallelJob,
    model: torch.nn.Module,
    validate: Callable[[], dict],
    ctx,
    name: str,
    patience: int,
    eval_every: int,
    epochs: int,
    devices: int = 1,
) -> EarlyStopping:
    """Train ``job`` on one device (or ``devices`` DDP ranks) with model selection on the validation metric; the
    best weights are restored. Returns the stopper (``history``, ``best_epoch``)."""
    stopper = EarlyStopping(model, validate, patience, eval_every, epochs)

    def end_epoch(epoch: int, record: dict, last: bool) -> bool:
        stop = stopper.update(epoch, {"epoch": epoch, **record})
        ctx.log_epoch(name, stopper.history[-1])
        return stop

    if devices > 1:  # all epochs in DDP processes, then early stopping replayed on the checkpoints
        job.dtype = ctx.autocast_dtype
        train_data_parallel(job, devices, model, ctx.torch_generator(), ctx, name, end_epoch)
    else:
        train_epochs(
            job,
            model,
            ctx.torch_generator(),
            ctx.device,
            end_epoch,
            progress=lambda starts, epoch: ctx.progress(starts, desc=f"{name} epoch {epoch}"),
            dtype=ctx.autocast_dtype,  # the cell's precision, as generate() uses it
        )
    stopper.restore()
    return stopper
