"""The DreamRec generator: history item vectors -> DreamRec's Tenc (ContRec's ``ConditionEncoder``) -> the shared
``GaussianDiffusion`` head over the (scaled) item space. Classifier-free guidance as in DreamRec: the condition
is replaced by a learned null embedding with probability ``p_uncond`` in training, and sampling mixes
``(1 + w) f(x, c) - w f(x, null)``."""

from __future__ import annotations

import math

import torch
from genrec_bench_plugins.contrec.diffusion import Denoiser, GaussianDiffusion, check_sampler
from genrec_bench_plugins.contrec.generator import ContRecOutput
from genrec_bench_plugins.contrec.model import ConditionEncoder
from torch import nn

from genrec_bench.errors import ConfigError, TrainingError
from genrec_bench.features import item_features
from genrec_bench.interfaces import Generator
from genrec_bench.training import EarlyStopping, check_samples_per_epoch, epoch_samples, training_summary


class DreamRecModel(nn.Module):
    """Item vectors of the history (+ a learned per-item offset, DreamRec's trainable item embeddings, zero at
    the start) -> causal Tenc -> condition; the diffusion head generates the next item's vector (``diffusion``
    None: the condition path alone, as ``benchmarks/scripts/item_space_probe.py`` trains it)."""

    def __init__(
        self,
        space: torch.Tensor,
        hidden: int,
        max_len: int,
        dropout: float,
        item_embedding: bool,
        diffusion: GaussianDiffusion | None,
    ):
        super().__init__()
        self.register_buffer("space", space, persistent=False)
        self.offset = nn.Embedding(space.shape[0], space.shape[1]) if item_embedding else None
        if self.offset is not None:
            nn.init.zeros_(self.offset.weight)
        self.encoder = ConditionEncoder(space.shape[1], hidden, max_len, dropout=dropout, proj_dropout=dropout)
        self.diffusion = diffusion

    def condition(self, history: torch.Tensor) -> torch.Tensor:
        """``history [B, L]`` (-1 padded, newest last) -> condition ``[B, hidden]``."""
        mask = history >= 0
        ids = history.clamp(min=0)
        x = self.space[ids]
        if self.offset is not None:
            x = x + self.offset(ids)
        x = x * mask.unsqueeze(-1)
        empty = ~mask.any(1)  # no history: one valid (zero) position, so the encoder has something to read
        if bool(empty.any()):
            mask = mask.clone()
            mask[empty, -1] = True
        return self.encoder(x, mask)


class DreamRec(Generator):
    """DreamRec's defaults (T = 200, exp schedule, x0-prediction, w = 2, p = 0.1, one linear denoiser layer,
    one 1-head causal block, hidden 64, dropout 0.1, AdamW 1e-3) over a fixed item space (LightGCN by default,
    the space ContRec diffuses in) instead of DreamRec's jointly learned embeddings (``item_embedding`` adds a
    learned per-item offset to the history inputs; the diffusion target stays the fixed vector)."""

    name = "dreamrec"

    def __init__(
        self,
        item_space: str | dict = "lightgcn",
        hidden: int = 64,
        dropout: float = 0.1,
        item_embedding: bool = True,
        diffusion_steps: int = 200,
        schedule: str = "exp",
        prediction: str = "x0",
        guidance: float = 2.0,
        p_uncond: float = 0.1,
        sample_steps: int | None = None,
        temperature: float = 1.0,
        eta: float = 1.0,
        denoiser_hidden: int = 0,
        epochs: int = 20,
        samples_per_epoch: int | float | None = None,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        grad_clip: float = 1.0,
        patience: int = 3,
        eval_every: int = 1,
        eval_batch: int = 1024,
        clip_sample: bool = True,
    ):
        if epochs < 1 or batch_size < 2 or hidden < 1:
            raise ConfigError("generator 'dreamrec': epochs >= 1, batch_size >= 2 and hidden >= 1 required")
        check_sampler("generator 'dreamrec'", diffusion_steps, sample_steps, temperature)
        if not 0 <= eta <= 1:
            raise ConfigError(f"generator 'dreamrec'.eta: expected 0 (deterministic DDIM) .. 1 (ancestral), got {eta}")
        self.item_space, self.hidden, self.dropout, self.item_embedding = item_space, hidden, dropout, item_embedding
        self.diff_args = dict(
            steps=diffusion_steps,
            schedule=schedule,
            prediction=prediction,
            guidance=guidance,
            p_uncond=p_uncond,
            sample_steps=sample_steps,
            temperature=temperature,
            eta=eta,
        )
        self.denoiser_hidden = denoiser_hidden
        self.clip_sample = clip_sample  # clamp sampled x0 estimates to the item space's range (as ContRec)
        check_samples_per_epoch(samples_per_epoch, "dreamrec")
        self.epochs, self.samples_per_epoch, self.batch_size = epochs, samples_per_epoch, batch_size
        self.lr, self.weight_decay, self.grad_clip = lr, weight_decay, grad_clip
        self.patience, self.eval_every, self.eval_batch = patience, eval_every, eval_batch
        self.history: list[dict] = []
        self.best_epoch = 0
        self._sample_rng: torch.Generator | None = None

    def fit(self, data, tokenizer, validate, ctx) -> None:
        space = item_features(self.item_space, data, ctx, where="generator 'dreamrec'.item_space").float()
        self.scale = float(space.std()) or 1.0  # unit-scale vectors for diffusion (x_T ~ N(0, I) matches)
        self.space = (space / self.scale).to(ctx.device)
        with torch.random.fork_rng():
            torch.manual_seed(ctx.seed + 887)
            dim = self.space.shape[1]
            diffusion = GaussianDiffusion(
                Denoiser(dim, self.hidden, self.denoiser_hidden), self.hidden, **self.diff_args
            )
            self.model = DreamRecModel(
                self.space, self.hidden, data.max_history, self.dropout, self.item_embedding, diffusion
            ).to(ctx.device)
        if self.clip_sample:
            self.model.diffusion.set_clip(self.space)
        hist, targets, _ = data.train_pairs(data.max_history)
        if targets.numel() == 0:
            raise TrainingError("dreamrec: no training pairs; every training sequence has a single item")
        per_epoch = epoch_samples(self.samples_per_epoch, len(targets))
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        stopper = (
            EarlyStopping(self.model, validate, self.patience, self.eval_every, self.epochs)
            if self.eval_every > 0
            else None
        )
        rng = ctx.torch_generator(offset=881)
        self._sample_rng = ctx.torch_generator(offset=977)  # one sampling stream for every generate() call
        step = 0
        for epoch in range(1, self.epochs + 1):
            self.model.train()
            order = torch.randperm(len(targets), generator=rng)[:per_epoch]
            total, rows, epoch_steps = 0.0, 0, 0
            for lo in ctx.progress(
                range(0, per_epoch, self.batch_size),
                desc=f"dreamrec epoch {epoch}",
                total=math.ceil(per_epoch / self.batch_size),
            ):
                idx = order[lo : lo + self.batch_size]
                if idx.numel() < 2:
                    continue
                x0 = self.space[targets[idx].to(ctx.device)]
                draws = self.model.diffusion.draw(len(idx), x0.shape[1], rng)
                loss, _ = self.model.diffusion.loss(x0, self.model.condition(hist[idx].to(ctx.device)), draws=draws)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"dreamrec: the diffusion loss became {loss.item()} in epoch {epoch}; lower lr (now {self.lr})"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
                optimizer.step()
                step, epoch_steps = step + 1, epoch_steps + 1
                total, rows = total + float(loss.detach()) * len(idx), rows + len(idx)
            mean = total / max(1, rows)
            record = {"epoch": epoch, "diffusion": mean, "loss": mean, "samples": rows, "steps": epoch_steps}
            stop = stopper.update(epoch, record) if stopper else False
            self.history.append(record)
            ctx.log_epoch(self.name, record)
            if stop:
                break
        if stopper:
            stopper.restore()
            self.best_epoch = stopper.best_epoch
        self.best_epoch = self.best_epoch or len(self.history)
        self.training = (
            stopper.summary()
            if stopper
            else training_summary("no_validation", self.history, self.best_epoch, 0, self.epochs)
        )
        self.steps = step
        self.model.eval()

    @torch.no_grad()
    def generate(self, batch, ctx) -> ContRecOutput:
        self.model.eval()
        if self._sample_rng is None:
            self._sample_rng = ctx.torch_generator(offset=977)
        vectors = []
        for lo in range(0, len(batch), self.eval_batch):
            cond = self.model.condition(batch.items[lo : lo + self.eval_batch].to(ctx.device))
            vectors.append(self.model.diffusion.sample(cond, generator=self._sample_rng).float() * self.scale)
        n = len(batch.users)
        return ContRecOutput(torch.cat(vectors), [""] * n, self.item_space, [], text_usable=False)

    def health(self) -> dict[str, float]:
        last = self.history[-1] if self.history else {}
        return {
            "best_epoch": float(self.best_epoch),
            "epochs_run": float(len(self.history)),
            "steps": float(getattr(self, "steps", 0)),
            "sample_steps": float(self.diff_args["sample_steps"] or self.diff_args["steps"]),
            "sample_temperature": float(self.diff_args["temperature"]),
            "final_diffusion_loss": float(last.get("diffusion", 0.0)),
            "final_train_loss": float(last.get("loss", 0.0)),
        }
