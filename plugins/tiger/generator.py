"""The TIGER generator: seq2seq over semantic ids with teacher forcing and early stopping."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from genrec_bench import distributed
from genrec_bench.errors import ConfigError, DataError, TrainingError
from genrec_bench.interfaces import Generator
from genrec_bench.training import EarlyStopping, EpochCheckpoint, TrainClock, check_samples_per_epoch, epoch_samples

from .compact import CompactCodeDecoder, CompactSeq2Seq
from .fast import train_fast
from .model import T5CodeDecoder, TokenLayout, build_t5, encoder_inputs
from .prefix_index import semantic_ids

BACKBONES = ("compact", "t5")
#: bf16 autocast on a CPU with bf16 units under protocol precision auto: off until
#: benchmarks/scripts/precision_compare.py shows the compact backbone's training faster (docs/tiger.md, "Precision")
CPU_BF16_PAYS = False
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class Tiger(Generator):
    """Input: a hashed user token + the semantic ids of up to ``max_history`` items; target: the next item's id.

    Defaults are the CPU profile; the paper profile (T5, d_model 128, 4+4 layers, 6 heads x 64, MLP 1024,
    dropout 0.1, 2000 user tokens, batch 256) is in benchmarks/paper/tiger_beauty.yaml.
    ``backbone``: "t5" (transformers' T5 built from a config, relative position bias, as the paper) or
    "compact" (absolute positions, fused attention, cross-attention shared by the beams: faster; d_kv unused).

    Speed levers (single device; each gives the same losses and rankings as the plain loop up to float rounding,
    tests/test_tiger_speed.py): ``resident_data`` keeps the training pairs on the device (no host-to-device copy
    per step); ``host_sync: false`` runs TIGER's own loop, which reads the loss once per epoch instead of every
    step; ``fused_adamw`` uses AdamW's fused CUDA kernel; ``bf16`` autocasts to bf16 on CUDA (training and
    generation; the plain loop always does on CUDA); ``compile`` wraps the model in torch.compile (needs
    ``host_sync: false``; ``compile_mode: reduce-overhead`` adds CUDA graphs). ``max_train_minutes`` stops
    training at the first epoch end past that wall-clock time (validating there) and keeps the best validated
    weights. On one device, each epoch end is snapshotted in the cell's resume folder (a few MB at the CPU
    profile): a sweep stopped mid-cell and run again goes on from the last finished epoch, the minutes already
    trained counting toward ``max_train_minutes``.
    """

    def __init__(
        self,
        backbone: str = "compact",
        d_model: int = 64,
        d_kv: int = 16,
        d_ff: int = 256,
        heads: int = 4,
        encoder_layers: int = 2,
        decoder_layers: int = 2,
        dropout: float = 0.1,
        n_user_tokens: int = 2000,
        max_history: int | None = None,
        epochs: int = 30,
        max_steps: int | None = None,
        samples_per_epoch: int | float | None = None,
        batch_size: int = 256,
        lr: float = 3e-3,
        warmup_steps: int = 500,
        weight_decay: float = 0.0,
        patience: int = 3,
        eval_every: int = 1,
        code_length: int | None = None,
        devices: int = 1,
        resident_data: bool = False,
        host_sync: bool = True,
        fused_adamw: bool = False,
        bf16: bool = True,
        compile: bool = False,
        compile_mode: str = "default",
        max_train_minutes: float | None = None,
    ):
        if backbone not in BACKBONES:
            raise ConfigError(f"tiger: backbone must be one of {BACKBONES}, not '{backbone}'")
        self.backbone = backbone
        self.arch = dict(
            d_model=d_model,
            d_kv=d_kv,
            d_ff=d_ff,
            heads=heads,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
            dropout=dropout,
        )
        self.n_user_tokens, self.max_history, self.code_length = n_user_tokens, max_history, code_length
        self.epochs, self.max_steps, self.batch_size = epochs, max_steps, batch_size
        check_samples_per_epoch(samples_per_epoch, "tiger")
        self.samples_per_epoch = samples_per_epoch
        self.lr, self.warmup_steps, self.weight_decay = lr, warmup_steps, weight_decay
        self.patience, self.eval_every = patience, eval_every
        if int(devices) < 1:
            raise ConfigError(f"tiger: devices must be >= 1, got {devices}")
        self.devices = int(devices)
        if self.devices > 1 and (resident_data or not host_sync or compile):
            raise ConfigError(
                "tiger: resident_data, host_sync: false and compile are single-device levers; "
                "leave them out with devices > 1"
            )
        if compile and host_sync:
            raise ConfigError("tiger: compile needs host_sync: false (TIGER's own training loop)")
        if compile_mode not in COMPILE_MODES:
            raise ConfigError(f"tiger: compile_mode must be one of {COMPILE_MODES}, not '{compile_mode}'")
        TrainClock(max_train_minutes, "tiger")  # checked here, started in fit
        self.resident_data, self.host_sync, self.fused_adamw = resident_data, host_sync, fused_adamw
        self.bf16, self.compile, self.max_train_minutes = bf16, compile, max_train_minutes
        self.compile_mode = compile_mode
        self.model = None
        self.layout: TokenLayout | None = None
        self.codes: torch.Tensor | None = None
        self.history: list[dict] = []
        self.best_epoch = 0

    def _bind(self, tokenizer, n_items: int, device: torch.device) -> None:
        if getattr(tokenizer, "kind", None) not in ("discrete", "atomic"):
            raise ConfigError(f"tiger needs a discrete tokenizer (semantic ids), got kind '{tokenizer.kind}'")
        codes, sizes = semantic_ids(tokenizer, n_items)
        if self.code_length is not None and codes.shape[1] != self.code_length:
            raise ConfigError(
                f"tiger was built for ids of {self.code_length} codes, the tokenizer gives "
                f"{codes.shape[1]}; set generator code_length to {codes.shape[1]} or remove it"
            )
        self.layout = TokenLayout(tuple(sizes), self.n_user_tokens)
        self.codes = codes.to(device)

    def fit(self, data, tokenizer, validate, ctx) -> None:
        self._bind(tokenizer, data.n_items, ctx.device)
        self.max_history = self.max_history or data.max_history
        self.model = self._build().to(ctx.device)
        histories, targets, users = data.train_pairs(self.max_history)
        if targets.numel() == 0:
            raise TrainingError("tiger: no training pairs; every training sequence has a single item")
        if self.resident_data:
            histories, targets, users = (t.to(ctx.device) for t in (histories, targets, users))
        job = TigerJob(self, histories, targets, users, ctx.seed)
        job.order_device = ctx.device if self.resident_data else None
        stopper = EarlyStopping(self.model, validate, self.patience, self.eval_every, self.epochs)
        clock = TrainClock(self.max_train_minutes, "tiger")
        codes_digest = hashlib.sha1(self.codes.cpu().numpy().tobytes()).hexdigest()
        checkpoint = EpochCheckpoint(
            ctx.resume_dir, "tiger", f"{ctx.identity}/{codes_digest}", ctx.logger, stopper=stopper, clock=clock
        )
        cap: list[str] = []  # the cap that ended training, when one did

        def end_epoch(epoch: int, record: dict, last: bool) -> bool:
            out_of_time = clock.expired()
            stop = stopper.update(epoch, {"epoch": epoch, **record}, force=last or out_of_time)
            ctx.log_epoch("tiger", stopper.history[-1])
            if out_of_time:
                ctx.logger.info("  tiger: max_train_minutes %.1f reached after epoch %d", self.max_train_minutes, epoch)
                cap.append("time_cap")
            elif last:
                cap.append("step_cap")
            return stop or out_of_time

        progress = lambda starts, epoch: ctx.progress(starts, desc=f"tiger epoch {epoch}")  # noqa: E731
        if self.devices > 1:
            distributed.train_data_parallel(
                job, self.devices, self.model, ctx.torch_generator(), ctx, "tiger", end_epoch
            )
        elif not self.host_sync:
            train_fast(
                job,
                self.model,
                ctx.torch_generator(),
                ctx.device,
                end_epoch,
                self._dtype(ctx) is not None,
                self.compile_mode if self.compile else None,
                progress,
                checkpoint,
            )
        else:
            distributed.train_epochs(
                job,
                self.model,
                ctx.torch_generator(),
                ctx.device,
                end_epoch,
                progress=progress,
                dtype=self._dtype(ctx),
                checkpoint=checkpoint,
            )
        stopper.restore()
        self.history, self.best_epoch = stopper.history, stopper.best_epoch
        self.training = stopper.summary(cap[-1] if cap else None)

    def _build(self):
        return build_model(self.backbone, self.layout, self.arch, self.max_history)

    def generate(self, batch, ctx) -> T5CodeDecoder | CompactCodeDecoder:
        empty = batch.lengths == 0
        if bool(empty.any()):
            user = int(batch.users[empty][0])
            raise DataError(f"tiger: user {user} has an empty history; it needs at least one item to generate from")
        histories = batch.items[:, -self.max_history :]
        input_ids, mask = encoder_inputs(self.layout, self.codes, histories, batch.users)
        dtype = self._dtype(ctx)
        with torch.autocast(ctx.device.type, dtype=dtype, enabled=dtype is not None):
            if self.backbone == "compact":
                return CompactCodeDecoder(
                    self.model, *self.model.memory(self.model.encode(input_ids, mask), mask), dtype
                )
            states = self.model.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return T5CodeDecoder(self.model, self.layout, states, mask, dtype)

    def _dtype(self, ctx) -> torch.dtype | None:
        """bf16 autocast where ``bf16`` is on and the protocol's precision allows it (on the CPU: only when
        ``CPU_BF16_PAYS``; ``precision: bf16`` forces it)."""
        if not self.bf16:
            return None
        return ctx.compute_dtype(cpu_bf16_pays=CPU_BF16_PAYS)

    def health(self) -> dict[str, float]:
        params = sum(p.numel() for p in self.model.parameters()) if self.model is not None else 0
        valid = [r["valid"] for r in self.history if "valid" in r]
        return {
            "best_epoch": float(self.best_epoch),
            "epochs_run": float(len(self.history)),
            "best_valid": max(valid) if valid else float("nan"),  # for choosing variants on validation
            "parameters": float(params),
            "final_train_loss": float(self.history[-1]["loss"]) if self.history else float("nan"),
        }

    def save(self, path: str | Path) -> None:
        """Weights, architecture, token layout and the item codes: enough to rank again without the tokenizer."""
        torch.save(
            {
                "backbone": self.backbone,
                "arch": self.arch,
                "layout": self.layout,
                "codes": self.codes.cpu(),
                "max_history": self.max_history,
                "n_user_tokens": self.n_user_tokens,
                "state": self.model.state_dict(),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> Tiger:
        saved = torch.load(path, map_location=device, weights_only=False)
        tiger = cls(
            backbone=saved["backbone"],
            **saved["arch"],
            n_user_tokens=saved["n_user_tokens"],
            max_history=saved["max_history"],
        )
        tiger.layout, tiger.codes = saved["layout"], saved["codes"].to(device)
        tiger.model = tiger._build().to(device)
        tiger.model.load_state_dict(saved["state"])
        tiger.model.eval()
        return tiger


def build_model(backbone: str, layout: TokenLayout, arch: dict, max_history: int) -> torch.nn.Module:
    """TIGER's seq2seq model: transformers' T5 from a config, or the compact backbone."""
    if backbone == "t5":
        return build_t5(layout, **arch)
    arch = {k: v for k, v in arch.items() if k != "d_kv"}
    if arch["d_model"] % arch["heads"]:
        raise ConfigError(f"tiger (compact): d_model {arch['d_model']} must be divisible by heads {arch['heads']}")
    return CompactSeq2Seq(layout, 1 + max_history * len(layout.codebook_sizes), **arch)


class TigerJob(distributed.DataParallelJob):
    """TIGER's training loop (the single-device path and every DDP rank run it): teacher-forced cross-entropy
    over the target codes; AdamW with linear warm-up, then inverse-square-root decay."""

    def __init__(self, tiger: Tiger, histories: torch.Tensor, targets: torch.Tensor, users: torch.Tensor, seed: int):
        self.backbone, self.arch, self.layout = tiger.backbone, tiger.arch, tiger.layout
        self.max_history, self.codes = tiger.max_history, tiger.codes.cpu()
        self.histories, self.targets, self.users = histories, targets, users
        self.epochs, self.batch_size, self.eval_every = tiger.epochs, tiger.batch_size, tiger.eval_every
        self.max_steps, self.samples_per_epoch, self.seed = tiger.max_steps, tiger.samples_per_epoch, seed
        self.lr, self.warmup_steps, self.weight_decay = tiger.lr, tiger.warmup_steps, tiger.weight_decay
        self.fused_adamw = tiger.fused_adamw
        self.order_device: torch.device | None = None  # resident data: the epoch order moves there once
        self._device_codes: torch.Tensor | None = None

    def build_model(self, device) -> torch.nn.Module:
        return build_model(self.backbone, self.layout, self.arch, self.max_history).to(device)

    def optimizer(self, model):
        fused = self.fused_adamw and all(p.is_cuda for p in model.parameters())
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=self.lr, weight_decay=self.weight_decay, **({"fused": True} if fused else {})
        )
        warmup = max(1, self.warmup_steps)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))
        )

    def epoch_order(self, rng: torch.Generator) -> torch.Tensor:
        n = self.targets.numel()
        order = torch.randperm(n, generator=rng)[: epoch_samples(self.samples_per_epoch, n)]
        return order if self.order_device is None else order.to(self.order_device)

    def nonfinite(self, name: str, value: float) -> None:
        raise TrainingError(f"tiger: the loss became {value}; lower lr (now {self.lr})")

    def summed_loss(self, model, rows, device):
        if self._device_codes is None or self._device_codes.device != torch.device(device):
            self._device_codes = self.codes.to(device)
        codes = self._device_codes
        rows = rows.to(self.histories.device)
        input_ids, mask = encoder_inputs(
            self.layout, codes, self.histories[rows].to(device), self.users[rows].to(device)
        )
        labels = self.layout.code_tokens(codes[self.targets[rows].to(device)])
        if self.backbone == "t5":
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        else:
            loss = model(input_ids, mask, labels)
        return loss * labels.numel(), labels.numel()
