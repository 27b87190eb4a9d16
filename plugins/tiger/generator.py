"""The TIGER generator: seq2seq over semantic ids with teacher forcing and early stopping."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from genrec_bench.errors import ConfigError, DataError, TrainingError
from genrec_bench.interfaces import Generator
from genrec_bench.training import EarlyStopping

from .compact import CompactCodeDecoder, CompactSeq2Seq
from .model import T5CodeDecoder, TokenLayout, build_t5, encoder_inputs
from .prefix_index import semantic_ids

BACKBONES = ("compact", "t5")


class Tiger(Generator):
    """Input: a hashed user token + the semantic ids of up to ``max_history`` items; target: the next item's id.

    Defaults are the CPU profile; the paper profile (T5, d_model 128, 4+4 layers, 6 heads x 64, MLP 1024,
    dropout 0.1, 2000 user tokens, batch 256) is in benchmarks/paper/tiger_beauty.yaml.
    ``backbone``: "t5" (transformers' T5 built from a config, relative position bias, as the paper) or
    "compact" (absolute positions, fused attention, cross-attention shared by the beams: faster; d_kv unused).
    """

    def __init__(self, backbone: str = "compact", d_model: int = 64, d_kv: int = 16, d_ff: int = 256, heads: int = 4, encoder_layers: int = 2,
                 decoder_layers: int = 2, dropout: float = 0.1, n_user_tokens: int = 2000,
                 max_history: int | None = None, epochs: int = 30, max_steps: int | None = None,
                 samples_per_epoch: int | None = None,
                 batch_size: int = 256, lr: float = 3e-3, warmup_steps: int = 500, weight_decay: float = 0.0,
                 patience: int = 3, eval_every: int = 1, code_length: int | None = None):
        if backbone not in BACKBONES:
            raise ConfigError(f"tiger: backbone must be one of {BACKBONES}, not '{backbone}'")
        self.backbone = backbone
        self.arch = dict(d_model=d_model, d_kv=d_kv, d_ff=d_ff, heads=heads, encoder_layers=encoder_layers,
                         decoder_layers=decoder_layers, dropout=dropout)
        self.n_user_tokens, self.max_history, self.code_length = n_user_tokens, max_history, code_length
        self.epochs, self.max_steps, self.batch_size = epochs, max_steps, batch_size
        self.samples_per_epoch = samples_per_epoch
        self.lr, self.warmup_steps, self.weight_decay = lr, warmup_steps, weight_decay
        self.patience, self.eval_every = patience, eval_every
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
            raise ConfigError(f"tiger was built for ids of {self.code_length} codes, the tokenizer gives "
                              f"{codes.shape[1]}; set generator code_length to {codes.shape[1]} or remove it")
        self.layout = TokenLayout(tuple(sizes), self.n_user_tokens)
        self.codes = codes.to(device)

    def fit(self, data, tokenizer, validate, ctx) -> None:
        self._bind(tokenizer, data.n_items, ctx.device)
        self.max_history = self.max_history or data.max_history
        self.model = self._build().to(ctx.device)
        histories, targets, users = data.train_pairs(self.max_history)
        if targets.numel() == 0:
            raise TrainingError("tiger: no training pairs; every training sequence has a single item")
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        warmup = max(1, self.warmup_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then inverse square root
            optimizer, lambda step: min((step + 1) / warmup, math.sqrt(warmup / (step + 1))))
        rng = ctx.torch_generator()
        stopper, step = EarlyStopping(self.model, validate, self.patience, self.eval_every, self.epochs), 0
        for epoch in ctx.progress(range(1, self.epochs + 1), desc="tiger epochs", total=self.epochs):
            self.model.train()
            order = torch.randperm(targets.numel(), generator=rng)[:self.samples_per_epoch]  # None: all pairs
            total = 0.0
            for lo in range(0, order.numel(), self.batch_size):
                idx = order[lo:lo + self.batch_size]
                loss = self._loss(histories[idx].to(ctx.device), targets[idx].to(ctx.device),
                                  users[idx].to(ctx.device), ctx)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * idx.numel()
                step += 1
                if self.max_steps and step >= self.max_steps:
                    break
            record = {"epoch": epoch, "loss": total / order.numel(), "step": step}
            done = bool(self.max_steps and step >= self.max_steps)
            stop = stopper.update(epoch, record, force=done)
            ctx.log_epoch("tiger", record)
            if stop or done:
                break
        stopper.restore()
        self.history, self.best_epoch = stopper.history, stopper.best_epoch

    def _build(self):
        if self.backbone == "t5":
            return build_t5(self.layout, **self.arch)
        arch = {k: v for k, v in self.arch.items() if k != "d_kv"}
        if arch["d_model"] % arch["heads"]:
            raise ConfigError(f"tiger (compact): d_model {arch['d_model']} must be divisible by heads {arch['heads']}")
        return CompactSeq2Seq(self.layout, 1 + self.max_history * len(self.layout.codebook_sizes), **arch)

    def _loss(self, histories, targets, users, ctx) -> torch.Tensor:
        input_ids, mask = encoder_inputs(self.layout, self.codes, histories, users)
        labels = self.layout.code_tokens(self.codes[targets])
        dtype = ctx.autocast_dtype
        with torch.autocast(ctx.device.type, dtype=dtype, enabled=dtype is not None):
            if self.backbone == "t5":
                loss = self.model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            else:
                loss = self.model.loss(input_ids, mask, labels)
        if not torch.isfinite(loss):
            raise TrainingError(f"tiger: the loss became {loss.item()}; lower lr (now {self.lr})")
        return loss

    def generate(self, batch, ctx) -> T5CodeDecoder | CompactCodeDecoder:
        empty = batch.lengths == 0
        if bool(empty.any()):
            user = int(batch.users[empty][0])
            raise DataError(f"tiger: user {user} has an empty history; it needs at least one item to generate from")
        histories = batch.items[:, -self.max_history:]
        input_ids, mask = encoder_inputs(self.layout, self.codes, histories, batch.users)
        dtype = ctx.autocast_dtype
        with torch.autocast(ctx.device.type, dtype=dtype, enabled=dtype is not None):
            if self.backbone == "compact":
                return CompactCodeDecoder(self.model, *self.model.memory(self.model.encode(input_ids, mask), mask),
                                          dtype)
            states = self.model.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return T5CodeDecoder(self.model, self.layout, states, mask, dtype)

    def health(self) -> dict[str, float]:
        params = sum(p.numel() for p in self.model.parameters()) if self.model is not None else 0
        return {"best_epoch": float(self.best_epoch), "epochs_run": float(len(self.history)),
                "parameters": float(params),
                "final_train_loss": float(self.history[-1]["loss"]) if self.history else float("nan")}

    def save(self, path: str | Path) -> None:
        """Weights, architecture, token layout and the item codes: enough to rank again without the tokenizer."""
        torch.save({"backbone": self.backbone, "arch": self.arch, "layout": self.layout, "codes": self.codes.cpu(),
                    "max_history": self.max_history, "n_user_tokens": self.n_user_tokens,
                    "state": self.model.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "Tiger":
        saved = torch.load(path, map_location=device, weights_only=False)
        tiger = cls(backbone=saved["backbone"], **saved["arch"], n_user_tokens=saved["n_user_tokens"],
                    max_history=saved["max_history"])
        tiger.layout, tiger.codes = saved["layout"], saved["codes"].to(device)
        tiger.model = tiger._build().to(device)
        tiger.model.load_state_dict(saved["state"])
        tiger.model.eval()
        return tiger
