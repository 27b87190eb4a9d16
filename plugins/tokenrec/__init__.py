"""TokenRec generator (Qu et al. 2024): MQ-VAE item tokens -> T5 with a fixed decoder prompt -> MLP head onto the
LightGCN item space; cosine-embedding loss with one random negative; cosine full ranking (retriever ``latent``
with ``metric: cos``). Composition: the tokenizer is plugin ``mqvae`` over ``lightgcn`` features, the output is
ContRec's ``ContRecOutput`` so that the existing ``latent`` retriever ranks it. Choices: docs/tokenrec.md.
"""

from __future__ import annotations

import torch
from genrec_bench_plugins.contrec.generator import ContRecOutput
from genrec_bench_plugins.tiger.prefix_index import semantic_ids

from genrec_bench import distributed, hookimpl
from genrec_bench.errors import ConfigError, TrainingError
from genrec_bench.features import item_features
from genrec_bench.interfaces import Generator
from genrec_bench.training import check_samples_per_epoch, epoch_samples

from .model import TokenRecModel, cosine_embedding_loss


class TokenRec(Generator):
    """Defaults are the paper's (T5-small shapes, 20-token prompt, head 256, AdamW lr 5e-5, wd 0.01, batch 128,
    100 epochs, history <= 50 shuffled in training). The T5 is built from its config: the pretrained t5-small
    weights cannot be loaded offline, so it is trained from scratch (docs/tokenrec.md)."""

    def __init__(
        self,
        item_space: str | dict = "lightgcn",
        d_model: int = 512,
        d_kv: int = 64,
        d_ff: int = 2048,
        heads: int = 8,
        encoder_layers: int = 6,
        decoder_layers: int = 6,
        dropout: float = 0.1,
        prompt_length: int = 20,
        head_hidden: int = 256,
        head_dropout: float = 0.2,
        margin: float = 0.0,
        max_history: int | None = 50,
        shuffle_history: bool = True,
        epochs: int = 100,
        samples_per_epoch: int | float | None = None,
        batch_size: int = 128,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        patience: int = 5,
        eval_every: int = 1,
    ):
        for name, value in dict(
            d_model=d_model,
            d_kv=d_kv,
            d_ff=d_ff,
            heads=heads,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
            prompt_length=prompt_length,
            head_hidden=head_hidden,
            epochs=epochs,
            batch_size=batch_size,
        ).items():
            if int(value) < 1:
                raise ConfigError(f"tokenrec: {name} must be >= 1, got {value}")
        if lr <= 0 or not (0 <= dropout < 1 and 0 <= head_dropout < 1) or not -1 <= margin <= 1:
            raise ConfigError("tokenrec: lr > 0, dropouts in [0, 1) and margin in [-1, 1] are required")
        check_samples_per_epoch(samples_per_epoch, "tokenrec")
        self.item_space = item_space
        self.shape = dict(
            d_model=d_model,
            d_kv=d_kv,
            d_ff=d_ff,
            heads=heads,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
            dropout=dropout,
            prompt_length=prompt_length,
            head_hidden=head_hidden,
            head_dropout=head_dropout,
        )
        self.margin, self.max_history, self.shuffle_history = margin, max_history, shuffle_history
        self.epochs, self.samples_per_epoch, self.batch_size = epochs, samples_per_epoch, batch_size
        self.lr, self.weight_decay, self.patience, self.eval_every = lr, weight_decay, patience, eval_every
        self.model: TokenRecModel | None = None
        self.codes: torch.Tensor | None = None
        self.history: list[dict] = []
        self.best_epoch = 0

    def fit(self, data, tokenizer, validate, ctx) -> None:
        if getattr(tokenizer, "kind", None) != "discrete":
            raise ConfigError(f"tokenrec needs a discrete tokenizer (mqvae), got kind '{tokenizer.kind}'")
        codes, sizes = semantic_ids(tokenizer, data.n_items)
        space = item_features(self.item_space, data, ctx, where="generator item_space").float()
        self.codes = codes.to(ctx.device)
        self.max_history = min(self.max_history or data.max_history, data.max_history)
        self.model = TokenRecModel(sizes, space.shape[1], **self.shape).to(ctx.device)
        histories, targets, _ = data.train_pairs(self.max_history)
        if targets.numel() == 0:
            raise TrainingError("tokenrec: no training pairs; every training sequence has a single item")
        job = TokenRecJob(self, histories, targets, space, ctx.seed)
        stopper = distributed.fit_early_stopped(
            job, self.model, validate, ctx, "tokenrec", self.patience, self.eval_every, self.epochs
        )
        self.history, self.best_epoch = stopper.history, stopper.best_epoch
        self.training = stopper.summary()

    def history_codes(self, items: torch.Tensor) -> torch.Tensor:
        """Item ids ``[b, L]`` (-1 padded) -> codes ``[b, L, K]`` (-1 where padded)."""
        codes = self.codes[items.clamp(min=0)]
        return codes.masked_fill((items < 0).unsqueeze(-1), -1)

    def generate(self, batch, ctx) -> ContRecOutput:
        items = batch.items[:, -self.max_history :].to(ctx.device)
        with torch.autocast(ctx.device.type, dtype=ctx.autocast_dtype, enabled=ctx.autocast_dtype is not None):
            vectors = self.model(self.history_codes(items)).float()
        return ContRecOutput(vectors, [""] * len(batch), self.item_space, [], text_usable=False)

    def health(self) -> dict[str, float]:
        return {
            "best_epoch": float(self.best_epoch),
            "epochs_run": float(len(self.history)),
            "final_train_loss": float(self.history[-1]["loss"]) if self.history else float("nan"),
        }


class TokenRecJob(distributed.DataParallelJob):
    """Shuffled (history, next item) pairs; one uniform random negative per sample; summed cosine losses."""

    def __init__(
        self, generator: TokenRec, histories: torch.Tensor, targets: torch.Tensor, space: torch.Tensor, seed: int
    ):
        self.generator, self.histories, self.targets, self.space = generator, histories, targets, space
        self.epochs, self.batch_size = generator.epochs, generator.batch_size
        self.eval_every, self.seed = generator.eval_every, seed

    def build_model(self, device) -> TokenRecModel:
        return self.generator.model

    def optimizer(self, model):
        return torch.optim.AdamW(
            model.parameters(), lr=self.generator.lr, weight_decay=self.generator.weight_decay
        ), None

    def epoch_order(self, rng: torch.Generator) -> torch.Tensor:
        n = self.targets.shape[0]
        return torch.randperm(n, generator=rng)[: epoch_samples(self.generator.samples_per_epoch, n)]

    def nonfinite(self, name: str, value: float) -> None:
        raise TrainingError(f"tokenrec: the loss became {value}; lower lr (now {self.generator.lr})")

    def loss_terms(self, model, shard, device, rng):
        rows = shard.rows
        histories = self.histories[rows]
        negatives = torch.randint(self.space.shape[0], (len(shard.batch),), generator=rng)
        if self.generator.shuffle_history:  # TokenRec shuffles the history order of each training sample
            keys = torch.rand(len(shard.batch), histories.shape[1], generator=rng)
            keys = shard.take(keys).masked_fill(histories < 0, -1.0)  # padding stays on the left
            histories = histories.gather(1, keys.argsort(dim=1))
        negatives = shard.take(negatives)
        histories = histories.to(device)
        predicted = model(self.generator.history_codes(histories)).float()
        space = self.space.to(device)
        loss = cosine_embedding_loss(
            predicted, space[self.targets[rows].to(device)], space[negatives.to(device)], self.generator.margin
        )
        return [distributed.Term("loss", loss.sum(), len(rows))]


@hookimpl
def register_generators(register):
    register("tokenrec", TokenRec)
