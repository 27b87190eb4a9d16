"""The DeftRec generator: ContRec's LLM backbone (prompts with continuous tokens, LoRA, greedy decoding) with an
epsilon-prediction diffusion head and the BPR-style negative-interaction term. See docs/deftrec.md."""

from __future__ import annotations

import torch
from genrec_bench_plugins.contrec.generator import ContRec

from genrec_bench.distributed import Shard, Term
from genrec_bench.errors import ConfigError

from .model import DeftHead, NegativeSampler, RecencyPool, ResidualDenoiser, pooled_dim


class DeftRec(ContRec):
    """Defaults follow the released DeftRec (paper-notes §4) where they fit any backbone; benchmarks set profiles."""

    name = "deftrec"

    def __init__(
        self,
        backbone: str = "smollm2",
        backbone_config: dict | None = None,
        layers: int | None = None,
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        lora_targets: list[str] | None = None,
        tokenizer_mode: str = "finetune",
        item_space: str | dict = "lightgcn",
        condition: str = "embedding",
        pooling: str = "mean",
        recency_decay: float = 1.0,
        cond_dim: int = 256,
        denoiser_hidden: int = 512,
        denoiser_blocks: int = 2,
        denoiser_dropout: float = 0.2,
        diffusion_steps: int = 1000,
        schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction: str = "epsilon",
        sample_steps: int | None = None,
        temperature: float = 1.0,
        eta: float = 1.0,
        guidance: float = 0.0,
        p_uncond: float = 0.0,
        negative_sampler: str = "uniform",
        n_negatives: int = 10,
        negative_mean: bool = True,
        popularity_alpha: float = 1.0,
        diffusion_repeats: int = 1,
        lm_weight: float = 0.1,
        diffusion_weight: float = 1.0,
        negative_weight: float = 0.5,
        prompt_items: int | None = None,
        title_chars: int = 20,
        target_chars: int = 50,
        target_template: str = "The user might lean towards {text}",
        max_new_tokens: int = 32,
        epochs: int = 10,
        samples_per_epoch: int | float | None = None,
        batch_size: int = 9,
        lr: float = 1e-3,
        head_lr: float = 1e-3,
        tokenizer_lr: float = 1e-3,
        weight_decay: float = 1e-5,
        warmup: float = 0.05,
        grad_clip: float = 1.0,
        patience: int = 10,
        eval_every: int = 1,
        eval_batch: int = 64,
        max_train_minutes: float | None = None,
        devices: int = 1,
        speed: dict | None = None,
        full_finetune: bool = False,
        token_noise: bool = True,
        clip_sample: bool = True,
    ):
        super().__init__(
            backbone=backbone,
            backbone_config=backbone_config,
            layers=layers,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            lora_targets=lora_targets,
            tokenizer_mode=tokenizer_mode,
            item_space=item_space,
            condition=condition,
            cond_dim=cond_dim,
            diffusion_steps=diffusion_steps,
            schedule=schedule,
            prediction=prediction,
            guidance=guidance,
            p_uncond=p_uncond,
            sample_steps=sample_steps,
            temperature=temperature,
            denoiser_hidden=0,
            lm_weight=lm_weight,
            diffusion_weight=diffusion_weight,
            dispersive_weight=0.0,
            prompt_items=prompt_items,
            title_chars=title_chars,
            target_chars=target_chars,
            target_template=target_template,
            max_new_tokens=max_new_tokens,
            epochs=epochs,
            samples_per_epoch=samples_per_epoch,
            batch_size=batch_size,
            lr=lr,
            head_lr=head_lr,
            tokenizer_lr=tokenizer_lr,
            weight_decay=weight_decay,
            warmup=warmup,
            grad_clip=grad_clip,
            patience=patience,
            eval_every=eval_every,
            eval_batch=eval_batch,
            max_train_minutes=max_train_minutes,
            devices=devices,
            speed=speed,
            full_finetune=full_finetune,
            token_noise=token_noise,
            clip_sample=clip_sample,
        )
        if diffusion_repeats < 1:
            raise ConfigError(f"generator 'deftrec'.diffusion_repeats: expected >= 1, got {diffusion_repeats}")
        if not 0 <= eta <= 1:
            raise ConfigError(f"generator 'deftrec'.eta: expected 0 (deterministic DDIM) .. 1 (ancestral), got {eta}")
        self.pooling, self.recency_decay = pooling, recency_decay
        self.denoiser_args = dict(hidden=denoiser_hidden, blocks=denoiser_blocks, dropout=denoiser_dropout)
        self.diff_args.update(beta_start=beta_start, beta_end=beta_end, eta=eta)
        self.negatives = dict(kind=negative_sampler, n=n_negatives, alpha=popularity_alpha)
        self.negative_mean, self.repeats = negative_mean, diffusion_repeats
        self.weights = dict(lm=lm_weight, diffusion=diffusion_weight, negative=negative_weight)
        self.sampler: NegativeSampler | None = None

    def _build(self, data, tokenizer, ctx) -> None:
        if self.tokenizer_mode == "frozen" and getattr(tokenizer, "pretrain", True) is False:
            raise ConfigError(
                "generator 'deftrec'.tokenizer_mode: 'frozen' with an untrained tokenizer (masked_kway "
                "pretrain: false) fixes random tokens; use 'finetune' or pretrain the tokenizer"
            )
        self.sampler = NegativeSampler(counts=data.train_item_counts(), **self.negatives)
        super()._build(data, tokenizer, ctx)  # backbone, LoRA, token source, item space, prompts (ContRec's)
        hidden = self.lm.get_input_embeddings().weight.shape[1]
        dim = self.space.shape[1]
        cond_dim = pooled_dim(self.pooling, hidden, self.cond_dim)
        with torch.random.fork_rng():
            torch.manual_seed(ctx.seed + 613)
            denoiser = ResidualDenoiser(dim, cond_dim, self.diff_args["steps"], **self.denoiser_args)
            self.head = DeftHead(  # the encoder's positions cover the condition (ContRec's max_condition)
                self.pooling,
                hidden,
                self.cond_dim,
                self.max_condition,
                denoiser,
                recency_decay=self.recency_decay,
                **self.diff_args,
            ).to(ctx.device)
        if self.clip_sample:  # ContRec's clip of the sampled x0 estimates to the item space's range
            self.head.diffusion.set_clip(self.space)

    def _terms(self, shard: Shard, rng: torch.Generator) -> list[Term]:
        """LM, positive denoising error (summed over rows) and the negative term (summed with its weights, counted
        by the weights' sum) on this rank's rows; negatives and diffusion draws are made for the whole batch."""
        neg, weights = (shard.take(v) for v in self.sampler(self._pairs[1][shard.batch], rng))
        draws = self.head.diffusion.draw(len(shard.batch) * self.repeats, self.space.shape[1], rng).take(shard)
        targets, lm, states, mask = self._lm_pass(shard)
        device = self.space.device
        negatives = self.space[neg.to(device)]  # [b, n, d]
        if self.negative_mean:  # the released code: one negative, the mean of n sampled items
            negatives, weights = negatives.mean(1, keepdim=True), torch.ones(len(targets), 1)
        pos, negative, _ = self.head.loss(
            states, mask, self.space[targets.to(device)], negatives, None, weights.to(device), self.repeats, draws=draws
        )
        kept = (~draws.drop).float().view(len(targets), self.repeats).sum(1, keepdim=True)
        negative_count = float((kept * weights).sum())  # the normaliser of GaussianDiffusion.negative_loss
        rows, w = len(targets) * self.repeats, self.weights
        return [
            lm,
            Term("diffusion", pos * rows, rows, w["diffusion"]),
            Term("negative", negative * max(1.0, negative_count), negative_count, w["negative"]),
        ]

    def health(self) -> dict[str, float]:
        """ContRec's figures, plus for ``pooling: recency`` the pooled weight on the last item (its K slots and
        the last position, every slot filled) after training and at the start: whether training moved it."""
        out = super().health()
        pool = getattr(getattr(self, "head", None), "pool", None)
        if isinstance(pool, RecencyPool):
            now, start = pool.weight_on_last(self.source.k + 1)
            out.update(recency_weight_last_item=now, recency_weight_last_item_init=start)
        return out
