"""The ContRec generator: LLM over prompts with continuous tokens, LoRA, and a dispersive diffusion head."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genrec_bench import distributed
from genrec_bench.context import RunContext
from genrec_bench.distributed import Shard, Term, gather_rows
from genrec_bench.errors import ConfigError, TrainingError
from genrec_bench.features import item_features
from genrec_bench.interfaces import Generator
from genrec_bench.training import (
    EarlyStopping,
    EpochCheckpoint,
    ListState,
    StreamState,
    TrainClock,
    check_samples_per_epoch,
    epoch_samples,
    state_digest,
    training_summary,
)

from .backbone import context_length, load_backbone, truncate_layers
from .diffusion import Denoiser, GaussianDiffusion, check_sampler
from .dispersive import dispersive_loss
from .fast_decode import decoder_for, parse_speed, sorted_generate, wants_sorting
from .model import DiffusionHead, TokenSource, lm_and_condition
from .packing import adam_options
from .prompt import PromptBuilder

CONDITIONS = ("hidden", "embedding", "prompt", "history")  # see model.lm_and_condition
#: bf16 autocast on a CPU with bf16 units (protocol precision auto): the LLM backbone's training and generation,
#: measured side by side in benchmarks/scripts/precision_compare.py (docs/contrec.md, "Precision")
CPU_BF16_PAYS = True
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ContRecOutput:
    """What ``generate`` hands the retrievers: a vector in the item space and the generated text."""

    vectors: torch.Tensor  # float [B, d], in the item space ``space`` (unscaled)
    texts: list[str]  # generated answers, template words stripped
    space: Any  # the item-space feature spec
    item_texts: list[str]  # every item's answer text (what a perfect generation would spell), template stripped
    text_usable: bool | None = None  # the generator's verdict on its text (None: unknown); see ContRec._check_text


class Trainable(nn.Module):
    """What training changes (LoRA weights, token source, head) as one module: EarlyStopping snapshots it and
    DistributedDataParallel wraps it; ``forward`` computes one training step's loss terms."""

    def __init__(self, generator: ContRec):
        super().__init__()
        lm = generator.lm
        self.lora = nn.ParameterDict({n.replace(".", "__"): p for n, p in lm.named_parameters() if p.requires_grad})
        self.source, self.head = generator.source, generator.head
        self.generator = generator  # not a module: its LM's trainable weights are registered above

    def forward(self, shard: Shard, rng: torch.Generator) -> list[Term]:
        return self.generator._terms(shard, rng)

    def train(self, mode: bool = True) -> Trainable:
        """The LM holds the LoRA layers (and their dropout) but is not a submodule (its trainable weights are
        registered through ``lora``): switch it with the rest, or the first validation's ``eval()`` (in
        ``generate``) would switch LoRA dropout off for the rest of training."""
        super().train(mode)
        self.generator.lm.train(mode)
        return self


class ContRec(Generator):
    """Defaults are the paper's choices where they fit any backbone; benchmarks set the CPU or paper profile.

    Training stops by ``patience`` (validations without a gain), at ``epochs``, or at the first epoch end after
    ``max_train_minutes`` (validated there; stop rule ``time_cap``), keeping the best validated weights."""

    #: Used in log lines and error messages (subclasses such as DeftRec set their own).
    name = "contrec"

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
        condition: str = "hidden",
        cond_dim: int = 256,
        condition_dropout: float | None = None,
        diffusion_steps: int = 200,
        schedule: str = "exp",
        prediction: str = "x0",
        guidance: float = 2.0,
        p_uncond: float = 0.1,
        sample_steps: int | None = None,
        temperature: float = 1.0,
        denoiser_hidden: int = 0,
        lm_weight: float = 0.1,
        diffusion_weight: float = 1.0,
        dispersive_weight: float = 0.5,
        dispersive_tau: float | None = None,
        prompt_items: int | None = None,
        title_chars: int = 50,
        target_chars: int = 50,
        target_template: str = "The user might lean towards {text}",
        max_new_tokens: int = 64,
        epochs: int = 10,
        samples_per_epoch: int | float | None = None,
        batch_size: int = 10,
        lr: float = 1e-4,
        head_lr: float = 1e-3,
        tokenizer_lr: float = 1e-5,
        weight_decay: float = 1e-3,
        warmup: float = 0.05,
        grad_clip: float = 1.0,
        patience: int = 3,
        eval_every: int = 1,
        eval_batch: int = 64,
        max_train_minutes: float | None = None,
        devices: int = 1,
        speed: dict | None = None,
        full_finetune: bool = False,
        diffusion_repeats: int = 1,
        token_noise: bool = True,
        clip_sample: bool = True,
        dispersive_on: str = "x0",
    ):
        if tokenizer_mode not in ("finetune", "frozen"):
            raise ConfigError(f"generator 'contrec'.tokenizer_mode: 'finetune' or 'frozen', got {tokenizer_mode!r}")
        if condition not in CONDITIONS:
            raise ConfigError(f"generator 'contrec'.condition: one of {', '.join(CONDITIONS)}, got {condition!r}")
        if dispersive_on not in ("x0", "condition"):
            raise ConfigError(f"generator 'contrec'.dispersive_on: 'x0' or 'condition', got {dispersive_on!r}")
        check_sampler(f"generator '{self.name}'", diffusion_steps, sample_steps, temperature)
        if diffusion_repeats < 1:
            raise ConfigError(f"generator 'contrec'.diffusion_repeats: expected >= 1, got {diffusion_repeats}")
        if epochs < 1 or batch_size < 2 or max_new_tokens < 1:
            raise ConfigError("generator 'contrec': epochs >= 1, batch_size >= 2 and max_new_tokens >= 1 required")
        self.backbone, self.backbone_config, self.layers = backbone, backbone_config, layers
        self.lora = dict(
            r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=lora_targets or LORA_TARGETS
        )
        self.tokenizer_mode, self.item_space, self.condition = tokenizer_mode, item_space, condition
        self.token_noise = token_noise  # the tokenizer's training-time noise on the prompt's tokens (TokenSource)
        self.clip_sample = clip_sample  # clamp sampled x0 estimates to the item space's range (docs/contrec.md)
        self.diff_args = dict(
            steps=diffusion_steps,
            schedule=schedule,
            prediction=prediction,
            guidance=guidance,
            p_uncond=p_uncond,
            sample_steps=sample_steps,
            temperature=temperature,
        )
        self.cond_dim, self.denoiser_hidden, self.condition_dropout = cond_dim, denoiser_hidden, condition_dropout
        self.weights = dict(lm=lm_weight, diffusion=diffusion_weight, dispersive=dispersive_weight)
        self.dispersive_tau = dispersive_tau
        # where the dispersive loss spreads the batch: the x0 estimates (the released code's place) or the
        # condition encoder's output h (Wang & He regularise intermediate representations, not outputs)
        self.dispersive_on = dispersive_on
        # MAR's diffusion_batch_mul (DeftRec has the same knob): each LLM condition serves that many (t, noise)
        # draws, more diffusion signal per (expensive) LLM pass; the dispersive term reads one draw per row
        self.repeats = int(diffusion_repeats)
        self._sample_rng: torch.Generator | None = None
        self.prompt_args = dict(title_chars=title_chars, target_chars=target_chars, target_template=target_template)
        self.prompt_items, self.max_new_tokens = prompt_items, max_new_tokens
        check_samples_per_epoch(samples_per_epoch, "contrec")
        self.epochs, self.samples_per_epoch, self.batch_size = epochs, samples_per_epoch, batch_size
        self.lr, self.head_lr, self.tokenizer_lr, self.weight_decay = lr, head_lr, tokenizer_lr, weight_decay
        self.warmup, self.grad_clip, self.patience = warmup, grad_clip, patience
        self.eval_every, self.eval_batch = eval_every, eval_batch
        TrainClock(max_train_minutes, f"generator '{self.name}'")  # checked here, started in fit
        self.max_train_minutes = max_train_minutes
        if int(devices) < 1:
            raise ConfigError(f"generator '{self.name}'.devices: expected >= 1, got {devices}")
        self.devices = int(devices)
        # fast paths (plugins/contrec/fast_decode.py, packing.py): all off by default
        self.speed = parse_speed(speed, f"generator '{self.name}'.speed")
        self.pack_width = int(self.speed["pack_width"]) if self.speed["pack"] else None
        self.full_finetune = bool(full_finetune)  # train every backbone weight (with or without LoRA)
        self.history: list[dict] = []
        self.best_epoch = 0
        self._health: dict[str, float] = {}

    # --- building ---------------------------------------------------------------------------------------
    def _build(self, data, tokenizer, ctx) -> None:
        lm, tok = load_backbone(self.backbone, ctx.cache_dir, self.backbone_config, ctx.seed)
        self._health["backbone_layers"] = float(truncate_layers(lm, self.layers))
        for p in lm.parameters():
            p.requires_grad_(False)
        if self.lora["r"] > 0:
            from peft import LoraConfig, inject_adapter_in_model

            names = {n.rsplit(".", 1)[-1] for n, _ in lm.named_modules()}
            targets = [t for t in self.lora["target_modules"] if t in names]
            if not targets:
                raise ConfigError(
                    f"generator 'contrec'.lora_targets: none of {self.lora['target_modules']} in {type(lm).__name__}"
                )
            lm = inject_adapter_in_model(LoraConfig(**{**self.lora, "target_modules": targets}), lm)
        if self.full_finetune:
            lm.requires_grad_(True)
        self.lm, self.tok = lm.to(ctx.device), tok
        hidden = lm.get_input_embeddings().weight.shape[1]
        emb_std = float(lm.get_input_embeddings().weight.std())
        self.source = TokenSource(
            tokenizer, data.n_items, hidden, emb_std, self.tokenizer_mode == "finetune", self.token_noise
        ).to(ctx.device)
        space = item_features(self.item_space, data, ctx, where="generator 'contrec'.item_space")
        self.scale = float(space.std()) or 1.0  # diffusion runs on unit-scale vectors; outputs are scaled back
        self.space = (space / self.scale).to(ctx.device)
        # the longest condition sequence (the encoder's position table): the answer's positions, or for
        # `history` every history item's K slots, the user's slots and the last position
        self.max_condition = self.max_new_tokens + 2
        if self.condition == "history":
            self.max_condition = (self.prompt_items or data.max_history) * self.source.k + self.source.user_k + 1
        denoiser = Denoiser(self.space.shape[1], self.cond_dim, self.denoiser_hidden)
        self.head = DiffusionHead(
            hidden,
            self.cond_dim,
            self.max_condition,
            GaussianDiffusion(denoiser, self.cond_dim, **self.diff_args),
            self.condition_dropout,
        ).to(ctx.device)
        if self.clip_sample:
            self.head.diffusion.set_clip(self.space)
        self.prompts = PromptBuilder(
            tok,
            data.item_text,
            self.source.k,
            user_tokens=self.source.user_k,
            context=context_length(lm),
            **self.prompt_args,
        )
        self.item_answers = self.prompts.strip(self.prompts.answer_texts(data.item_text))
        self.prompt_items = self.prompt_items or data.max_history

    def _optimizer(self, total_steps: int):
        lora = [p for n, p in self.lm.named_parameters() if p.requires_grad]
        tok = [p for p in self.source.models.parameters()] if self.source.kind == "continuous" else []
        tok_ids = {id(p) for p in tok}
        heads = [p for p in [*self.source.parameters(), *self.head.parameters()] if id(p) not in tok_ids]
        groups = [{"params": heads, "lr": self.head_lr}]
        if lora:
            groups.append({"params": lora, "lr": self.lr})
        if tok:
            groups.append({"params": tok, "lr": self.tokenizer_lr})
        optimizer = torch.optim.AdamW(
            groups, betas=(0.9, 0.98), weight_decay=self.weight_decay, **adam_options(self.speed, groups)
        )
        warm = max(1, int(self.warmup * total_steps))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: min(
                (s + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(1.0, max(0, s - warm) / max(1, total_steps - warm))))
            ),
        )
        return optimizer, schedule, [p for g in groups for p in g["params"]]

    # --- training ---------------------------------------------------------------------------------------
    def _lm_pass(self, shard: Shard) -> tuple[torch.Tensor, Term, torch.Tensor, torch.Tensor]:
        """This rank's targets, the LM term (summed over answer tokens) and the condition states + mask."""
        hist, targets, users = (x[shard.rows] for x in self._pairs)
        prompt = self.prompts.build(hist, users if self.source.user_k else None, targets).to(self.space.device)
        lm_sum, n_tokens, states, mask = lm_and_condition(
            self.lm, self.source, prompt, self.condition, pack_width=self.pack_width
        )
        return targets, Term("lm", lm_sum, n_tokens, self.weights["lm"]), states, mask

    def _terms(self, shard: Shard, rng: torch.Generator) -> list[Term]:
        """Loss terms of one step on this rank's rows: LM, diffusion (summed over vector entries) and the
        dispersive loss over the whole batch's x0 estimates. Random draws are made for the whole batch."""
        draws = self.head.diffusion.draw(len(shard.batch) * self.repeats, self.space.shape[1], rng).take(shard)
        targets, lm, states, mask = self._lm_pass(shard)
        diff_loss, x0_hat = self.head.loss(
            states, mask, self.space[targets.to(self.space.device)], draws=draws, repeats=self.repeats
        )
        first = x0_hat.view(len(targets), self.repeats, -1)[:, 0]  # one x0 estimate per row for the dispersive term
        spread = first if self.dispersive_on == "x0" else self.head.last_condition
        disp = dispersive_loss(gather_rows(spread.float(), shard), self.dispersive_tau)
        w, n = self.weights, x0_hat.numel()
        return [
            lm,
            Term("diffusion", diff_loss * n, n, w["diffusion"]),
            Term("dispersive", disp, None, w["dispersive"]),
        ]

    def fit(self, data, tokenizer, validate, ctx) -> None:
        blueprint = copy.deepcopy(self)  # unbuilt: what each DDP rank builds its copy from
        self._build(data, tokenizer, ctx)
        hist, targets, users = data.train_pairs(self.prompt_items)
        if targets.numel() == 0:
            raise TrainingError(f"{self.name}: no training pairs; every training sequence has a single item")
        self._pairs = (hist, targets, users)
        job = ContRecJob(self, blueprint, data, tokenizer, ctx)
        trainable = Trainable(self)
        stopper = (
            EarlyStopping(trainable, validate, self.patience, self.eval_every, self.epochs)
            if self.eval_every > 0
            else None
        )

        clock = TrainClock(self.max_train_minutes, f"generator '{self.name}'")

        def end_epoch(epoch: int, record: dict, last: bool) -> bool:
            record = {"epoch": epoch, **record}
            capped = clock.expired()  # the time cap validates this epoch, due or not, and stops
            stop = stopper.update(epoch, record, force=capped) if stopper else False
            self.history.append(record)
            ctx.log_epoch(self.name, record)
            if capped and not stop:
                ctx.logger.info("  %s: max_train_minutes %g reached after epoch %d", self.name, clock.minutes, epoch)
            return stop or capped

        rng = ctx.torch_generator(offset=331)
        # one sampling stream for every generate() call of this fit (validations, then the test): re-seeding per
        # call gave row i of every batch, validation and test alike, the same x_T and the same sampling noise
        self._sample_rng = ctx.torch_generator(offset=977)
        # epoch snapshots (one process): an interrupted cell resumes at its last finished epoch, bit for bit
        parts: dict[str, Any] = {
            "clock": clock,
            "history": ListState(self.history),
            "sampling": StreamState(self._sample_rng),
        }
        if stopper:
            parts["stopper"] = stopper
        fingerprint = f"{ctx.identity}/{state_digest(trainable)}"
        checkpoint = EpochCheckpoint(ctx.resume_dir, self.name, fingerprint, ctx.logger, **parts)
        if self.devices > 1:
            distributed.train_data_parallel(job, self.devices, trainable, rng, ctx, self.name, end_epoch)
        else:
            steps = math.ceil(job.per_epoch / self.batch_size)
            distributed.train_epochs(
                job,
                trainable,
                rng,
                ctx.device,
                end_epoch,
                progress=lambda starts, epoch: ctx.progress(starts, desc=f"{self.name} epoch {epoch}", total=steps),
                dtype=job.dtype,
                checkpoint=checkpoint,
            )
        if stopper:
            stopper.restore()
            self.best_epoch = stopper.best_epoch
        self.best_epoch = self.best_epoch or len(self.history)
        self.training = (
            stopper.summary("time_cap" if clock.fired else None)
            if stopper
            else training_summary(
                "time_cap" if clock.fired else "no_validation", self.history, self.best_epoch, 0, self.epochs
            )
        )
        self._health["parameters_trained"] = float(sum(p.numel() for p in trainable.parameters()))
        self.lm.eval(), self.source.eval(), self.head.eval()
        self._check_text(ctx)

    def _check_text(self, ctx) -> None:
        """Can the backbone write the answer? Its final LM loss (nats per answer token) against a uniform guess
        over the vocabulary (log V); ``text_usable`` goes to the health figures and to the hybrid retriever."""
        lm = (self.history[-1] if self.history else {}).get("lm")
        uniform = math.log(self.lm.get_output_embeddings().weight.shape[0])
        self.text_usable = lm is not None and math.isfinite(lm) and lm < uniform
        self._health.update(text_usable=float(self.text_usable), uniform_lm_loss=uniform)
        if not self.text_usable:
            ctx.logger.warning(
                "%s: the backbone cannot write the answer text (final LM loss %s nats/token, a "
                "uniform guess costs %.2f): text and hybrid retrieval carry no text signal",
                self.name,
                "n/a" if lm is None else f"{lm:.2f}",
                uniform,
            )

    # --- generation -------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch, ctx) -> ContRecOutput:
        if wants_sorting(self, batch):  # speed.sort_by_length: chunks of similar prompt length
            return sorted_generate(self, batch, ctx)
        self.lm.eval(), self.source.eval(), self.head.eval()
        if self._sample_rng is None:  # generate() before fit() finished (or an unfitted copy)
            self._sample_rng = ctx.torch_generator(offset=977)
        generator = self._sample_rng
        vectors, texts, dtype = [], [], ctx.compute_dtype(cpu_bf16_pays=CPU_BF16_PAYS)
        for lo in range(0, len(batch), self.eval_batch):
            hist = batch.items[lo : lo + self.eval_batch, -self.prompt_items :]
            users = batch.users[lo : lo + self.eval_batch] if self.source.user_k else None
            prompt = self.prompts.build(hist, users, reserve=self.max_new_tokens).to(ctx.device)
            with torch.autocast(ctx.device.type, dtype=dtype, enabled=dtype is not None):
                tokens, states, mask = decoder_for(self)(
                    self.lm, self.source, prompt, self.max_new_tokens, self.prompts.eos, self.condition
                )
                x = self.head.sample(states, mask, generator)
            vectors.append(x.float() * self.scale)
            is_eos = (tokens == self.prompts.eos).long()
            valid = (is_eos.cumsum(1) - is_eos) == 0  # up to and including the first end-of-sequence token
            cut = torch.where(valid, tokens, torch.full_like(tokens, self.prompts.eos)).cpu()
            texts += self.tok.batch_decode(cut, skip_special_tokens=True)
        return ContRecOutput(
            torch.cat(vectors),
            self.prompts.strip(texts),
            self.item_space,
            self.item_answers,
            getattr(self, "text_usable", None),
        )

    def health(self) -> dict[str, float]:
        last = self.history[-1] if self.history else {}
        out = {"best_epoch": float(self.best_epoch), "epochs_run": float(len(self.history)), **self._health}
        out["sample_steps"] = float(self.diff_args["sample_steps"] or self.diff_args["steps"])
        out["sample_temperature"] = float(self.diff_args["temperature"])
        out.update(
            {
                f"final_{k}_loss": float(v)
                for k, v in last.items()
                if k not in ("epoch", "valid", "loss", "samples", "steps")
            }
        )
        if "loss" in last:
            out["final_train_loss"] = float(last["loss"])
        return out


class ContRecJob(distributed.DataParallelJob):
    """ContRec's (and DeftRec's) training loop for :func:`genrec_bench.distributed.train_epochs`: one process,
    or every DDP rank, which builds its own copy of the generator (backbone from the cache) from ``blueprint``."""

    ddp_options = {"find_unused_parameters": True, "broadcast_buffers": False}  # buffers are constant tables
    min_batch = 2  # the dispersive loss and in-batch negatives compare rows

    def __init__(self, built: ContRec, blueprint: ContRec, data, tokenizer, ctx):
        n = built._pairs[1].numel()
        self.per_epoch = epoch_samples(built.samples_per_epoch, n)
        self.n_pairs, self.epochs, self.batch_size = n, built.epochs, built.batch_size
        self.eval_every, self.seed, self.grad_clip = built.eval_every, ctx.seed, built.grad_clip
        self.total_steps = math.ceil(self.per_epoch / self.batch_size) * self.epochs
        self.name, self.hint = built.name, f"lower lr {built.lr} / head_lr {built.head_lr}, or check the item space"
        self.blueprint, self.data, self.tokenizer = blueprint, data, tokenizer
        self.cache_dir, self.work_dir = ctx.cache_dir, ctx.work_dir
        self.dtype = ctx.compute_dtype(cpu_bf16_pays=CPU_BF16_PAYS)  # the same precision on every DDP rank

    def build_model(self, device: torch.device) -> Trainable:
        generator = copy.deepcopy(self.blueprint)
        ctx = RunContext(device, self.seed, self.cache_dir, self.work_dir, show_progress=False)
        generator._build(self.data, self.tokenizer, ctx)
        generator._pairs = self.data.train_pairs(generator.prompt_items)
        return Trainable(generator)

    def optimizer(self, model: Trainable):
        optimizer, schedule, _ = model.generator._optimizer(self.total_steps)
        return optimizer, schedule

    def epoch_order(self, rng: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.n_pairs, generator=rng)[: self.per_epoch]

    def loss_terms(self, model, shard: Shard, device, rng) -> list[Term]:
        return model(shard, rng)

    def nonfinite(self, name: str, value: float) -> None:
        raise TrainingError(f"{self.name}: the {name} loss became {value}; the cell is stopped ({self.hint})")
