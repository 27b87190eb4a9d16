"""SASRec generator: next-item prediction with full-softmax cross-entropy over the catalogue."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from genrec_bench import distributed, hookimpl
from genrec_bench.errors import TrainingError
from genrec_bench.interfaces import Generator
from genrec_bench.training import EarlyStopping

from .model import SASRecModel


class SASRec(Generator):
    """Trains on every position of every training window; early stopping on the validation metric.

    ``max_len`` defaults to the protocol's history cap, so that SASRec sees what every other method sees.

    ``devices > 1`` trains data-parallel (DDP) on that many devices of the node (GPUs, or CPU processes with
    gloo when there is no GPU), at the same global ``batch_size``; see docs/scaling.md "Multi-GPU training".
    """

    def __init__(self, hidden: int = 64, layers: int = 2, heads: int = 1, dropout: float = 0.2,
                 max_len: int | None = None, epochs: int = 200, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 0.0, patience: int = 5, eval_every: int = 1, devices: int = 1):
        self.params = dict(hidden=hidden, layers=layers, heads=heads, dropout=dropout)
        self.max_len, self.epochs, self.batch_size = max_len, epochs, batch_size
        self.lr, self.weight_decay, self.patience, self.eval_every = lr, weight_decay, patience, eval_every
        if int(devices) < 1:
            raise ValueError(f"SASRec: devices must be >= 1, got {devices}")
        self.devices = int(devices)
        self.model: SASRecModel | None = None
        self.history: list[dict] = []
        self.best_epoch = 0

    def fit(self, data, tokenizer, validate, ctx) -> None:
        max_len = self.max_len or data.max_history
        self.model = SASRecModel(data.n_items, max_len=max_len, **self.params).to(ctx.device)
        windows = data.train_windows(max_len + 1)
        if windows.shape[0] == 0:
            raise TrainingError("SASRec: no training sequences of 2+ items; the data set is too small")
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        rng = ctx.torch_generator()
        stopper = EarlyStopping(self.model, validate, self.patience, self.eval_every, self.epochs)
        if self.devices > 1:
            self._fit_distributed(windows, rng, stopper, max_len, ctx)
            return
        for epoch in ctx.progress(range(1, self.epochs + 1), desc="sasrec epochs", total=self.epochs):
            if self._end_epoch(stopper, epoch, self._train_epoch(windows, optimizer, rng, ctx), ctx):
                break
        self._finish(stopper)

    def _end_epoch(self, stopper, epoch: int, loss: float, ctx) -> bool:
        """Record an epoch (validating when due) and log it; True when early stopping says stop."""
        record = {"epoch": epoch, "loss": loss}
        stop = stopper.update(epoch, record)
        ctx.log_epoch("sasrec", record)
        return stop

    def _finish(self, stopper) -> None:
        stopper.restore()
        self.history, self.best_epoch = stopper.history, stopper.best_epoch

    def _fit_distributed(self, windows, rng, stopper, max_len, ctx) -> None:
        """All epochs in ``devices`` DDP processes; then replay early stopping on the saved checkpoints.

        Rank 0 saves the weights at every epoch where single-device training would validate; the parent then
        validates them in epoch order with the same EarlyStopping, so model selection equals single-device
        training (epochs after the stopping point are trained but ignored).
        """
        checkpoints = Path(ctx.work_dir) / "sasrec-ddp"
        checkpoints.mkdir(parents=True, exist_ok=True)
        config = dict(model=dict(n_items=self.model.item_embedding.num_embeddings - 1, max_len=max_len,
                                 **self.params),
                      epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                      eval_every=max(1, self.eval_every), seed=ctx.seed, checkpoints=str(checkpoints))
        init_state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        use_cuda = ctx.device.type == "cuda"
        ctx.logger.info("  sasrec: training on %d %s processes (DDP, %s)", self.devices,
                        "CUDA" if use_cuda else "CPU", distributed.backend(use_cuda))
        losses = distributed.spawn(_ddp_train, self.devices, config, init_state, windows, rng.get_state(),
                                   use_cuda=use_cuda)
        for epoch, loss in enumerate(losses, start=1):
            path = checkpoints / f"epoch-{epoch}.pt"
            if path.exists():
                self.model.load_state_dict(torch.load(path, map_location=ctx.device))
                path.unlink()
            if self._end_epoch(stopper, epoch, loss, ctx):
                break
        self._finish(stopper)

    def _train_epoch(self, windows: torch.Tensor, optimizer, rng: torch.Generator, ctx) -> float:
        self.model.train()
        order = torch.randperm(windows.shape[0], generator=rng)
        total, count = 0.0, 0
        for lo in range(0, len(order), self.batch_size):
            batch = windows[order[lo:lo + self.batch_size]].to(ctx.device)
            inputs, targets = batch[:, :-1], batch[:, 1:]
            keep = (targets >= 0) & (inputs >= 0)
            with torch.autocast(ctx.device.type, dtype=ctx.autocast_dtype, enabled=ctx.autocast_dtype is not None):
                hidden = self.model(inputs)[keep]
                logits = hidden @ self.model.item_weights().T
            loss = F.cross_entropy(logits.float(), targets[keep])
            if not torch.isfinite(loss):
                raise TrainingError(f"SASRec: the loss became {loss.item()}; lower lr (now {self.lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * int(keep.sum())
            count += int(keep.sum())
        return total / max(1, count)

    def generate(self, batch, ctx) -> torch.Tensor:
        with torch.autocast(ctx.device.type, dtype=ctx.autocast_dtype, enabled=ctx.autocast_dtype is not None):
            hidden = self.model(batch.items[:, -(self.max_len or batch.items.shape[1]):])[:, -1]
            return (hidden @ self.model.item_weights().T).float()

    def health(self) -> dict[str, float]:
        return {"best_epoch": float(self.best_epoch), "epochs_run": float(len(self.history)),
                "final_train_loss": float(self.history[-1]["loss"]) if self.history else float("nan")}


def _ddp_train(rank: int, world_size: int, device: torch.device, config: dict, init_state: dict,
               windows: torch.Tensor, rng_state: torch.Tensor) -> list[float]:
    """One DDP rank of SASRec training (module level, so that torch.multiprocessing can pickle it).

    Every rank draws the same order from the same generator state and takes its shard of each global batch;
    the summed token loss is scaled by ``world_size / global token count`` so that DDP's averaged gradient is
    the single-device mean-loss gradient of the whole batch. Returns the per-epoch mean training loss.
    """
    torch.manual_seed(config["seed"] * 1_000_003 + rank)  # dropout masks differ per rank (as they must)
    model = SASRecModel(**config["model"])
    model.load_state_dict(init_state)
    ddp = distributed.wrap(model, device)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    rng = torch.Generator()
    rng.set_state(rng_state)
    autocast = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    epochs, batch_size, eval_every = config["epochs"], config["batch_size"], config["eval_every"]
    losses = []
    for epoch in range(1, epochs + 1):
        ddp.train()
        order = torch.randperm(windows.shape[0], generator=rng)
        total, count = 0.0, 0
        for lo in range(0, len(order), batch_size):
            full = windows[order[lo:lo + batch_size]]
            global_count = int(((full[:, 1:] >= 0) & (full[:, :-1] >= 0)).sum())
            local = distributed.shard(full, rank, world_size)
            weight = distributed.global_mean_scale(world_size, global_count)
            if local.shape[0] == 0:  # fewer rows than ranks: still join the all-reduce, with zero gradient
                local, weight = full[:1], 0.0
            batch = local.to(device)
            inputs, targets = batch[:, :-1], batch[:, 1:]
            keep = (targets >= 0) & (inputs >= 0)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                hidden = ddp(inputs)[keep]
                logits = hidden @ model.item_weights().T
            summed = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
            if not torch.isfinite(summed):
                raise TrainingError(f"SASRec (rank {rank}): the loss became {summed.item()}; lower lr")
            optimizer.zero_grad(set_to_none=True)
            (summed * weight).backward()
            optimizer.step()
            if weight:
                total += summed.item()
                count += int(keep.sum())
        total, count = distributed.all_reduce_sum([total, float(count)], device)
        losses.append(total / max(1.0, count))
        if rank == 0 and (epoch % eval_every == 0 or epoch == epochs):
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()},
                       Path(config["checkpoints"]) / f"epoch-{epoch}.pt")
    return losses


@hookimpl
def register_generators(register):
    register("sasrec", SASRec)
