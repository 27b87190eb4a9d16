"""LC-Rec's generator (Zheng et al., ICDE 2024, sec. III-B/C; the sequential item prediction task): a causal LLM
whose vocabulary gains one token per (level, code) of the item indices, fine-tuned on prompts that list the
history's index tokens and answer with the next item's index tokens; decoded by the trie-constrained beam
retriever of plugin ``tiger`` (``beam``), so that it never emits an index that is no item."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from genrec_bench_plugins.contrec.backbone import load_backbone, truncate_layers
from genrec_bench_plugins.tiger.prefix_index import check_unique, semantic_ids

from genrec_bench import distributed
from genrec_bench.errors import ConfigError, TrainingError
from genrec_bench.interfaces import Generator
from genrec_bench.training import EarlyStopping

PROMPT = "Here are the user's historical interactions: "
QUESTION = " Try to predict the next item the user will interact with: "


class PromptLM(torch.nn.Module):
    """The LM with index tokens appended to its vocabulary; builds the token rows of prompts and answers."""

    def __init__(self, lm, tokenizer, codebook_sizes: list[int]):
        super().__init__()
        self.lm = lm
        self.pad = int(tokenizer.pad_token_id)
        self.base = lm.get_input_embeddings().weight.shape[0]
        self.offsets = [self.base + sum(codebook_sizes[:i]) for i in range(len(codebook_sizes))]
        self.sizes = list(codebook_sizes)
        lm.resize_token_embeddings(self.base + sum(codebook_sizes), mean_resizing=False)
        self.register_buffer(
            "prompt", torch.tensor(tokenizer(PROMPT, add_special_tokens=False)["input_ids"]), persistent=False
        )
        self.register_buffer(
            "question", torch.tensor(tokenizer(QUESTION, add_special_tokens=False)["input_ids"]), persistent=False
        )
        self.register_buffer("code_offsets", torch.tensor(self.offsets), persistent=False)

    def rows(self, history_codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt token rows ``[b, T]`` (left-padded) and their mask for history codes ``[b, L, K]`` (-1 pad)."""
        b, length, k = history_codes.shape
        valid = (history_codes >= 0).all(-1)
        tokens = (history_codes.clamp(min=0) + self.code_offsets).reshape(b, length * k)
        keep = valid.repeat_interleave(k, dim=1)
        body = torch.where(keep, tokens, torch.full_like(tokens, self.pad))
        # stable sort moves padding to the left while keeping the history's order
        order = torch.sort(keep.long(), dim=1, stable=True).indices
        body, keep = body.gather(1, order), keep.gather(1, order)
        ones = torch.ones(b, 1, dtype=torch.bool, device=tokens.device)
        tokens = torch.cat([self.prompt.expand(b, -1), body, self.question.expand(b, -1)], dim=1)
        mask = torch.cat([ones.expand(b, self.prompt.numel()), keep, ones.expand(b, self.question.numel())], 1)
        # left padding for the whole row: padded history slots first
        order = torch.sort(mask.long(), dim=1, stable=True).indices
        return tokens.gather(1, order), mask.gather(1, order)

    def logits(self, tokens: torch.Tensor, mask: torch.Tensor, last: int) -> torch.Tensor:
        """Vocabulary logits at the ``last`` positions only ``[b, last, V]``: the head over every prompt position
        would be ``b x T x V`` floats (26 GB for one beam step of 1,000 users x 20 beams on CPU)."""
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        inner = self.lm.get_decoder() if hasattr(self.lm, "get_decoder") else self.lm.model
        states = inner(input_ids=tokens, attention_mask=mask.long(), position_ids=positions).last_hidden_state
        return self.lm.get_output_embeddings()(states[:, -last:])

    def forward(self, history_codes: torch.Tensor, target_codes: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Summed cross-entropy of the answer's index tokens, each restricted to its level's codes."""
        tokens, mask = self.rows(history_codes)
        answer = target_codes + self.code_offsets
        full = torch.cat([tokens, answer], dim=1)
        full_mask = torch.cat([mask, torch.ones_like(answer, dtype=torch.bool)], dim=1)
        k = answer.shape[1]
        logits = self.logits(full, full_mask, k + 1)[:, :-1].float()  # the positions that predict each answer token
        loss = logits.new_zeros(())
        for level, (start, size) in enumerate(zip(self.offsets, self.sizes, strict=True)):
            loss = loss + F.cross_entropy(
                logits[:, level, start : start + size], target_codes[:, level], reduction="sum"
            )
        return loss, int(target_codes.numel())


class LCRecDecoder:
    """What the ``beam`` retriever reads: ``log_probs(prefix [b, w, t]) -> [b, w, size of level t]``."""

    def __init__(self, model: PromptLM, tokens: torch.Tensor, mask: torch.Tensor):
        self.model, self.tokens, self.mask = model, tokens, mask

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def select(self, rows: slice) -> LCRecDecoder:
        return LCRecDecoder(self.model, self.tokens[rows], self.mask[rows])

    @torch.no_grad()
    def log_probs(self, prefix: torch.Tensor) -> torch.Tensor:
        b, w, t = prefix.shape
        tokens = self.tokens.unsqueeze(1).expand(-1, w, -1).reshape(b * w, -1)
        mask = self.mask.unsqueeze(1).expand(-1, w, -1).reshape(b * w, -1)
        if t:
            answer = (prefix + self.model.code_offsets[:t]).reshape(b * w, t)
            tokens = torch.cat([tokens, answer], dim=1)
            mask = torch.cat([mask, torch.ones_like(answer, dtype=torch.bool)], dim=1)
        start, size = self.model.offsets[t], self.model.sizes[t]
        logits = self.model.logits(tokens, mask, 1)[:, -1, start : start + size].float()
        return F.log_softmax(logits, dim=-1).view(b, w, size)


class LCRec(Generator):
    """``backbone``: ``smollm2`` (SmolLM2-135M-Instruct, ContRec's loader) or ``random`` (a tiny Llama from
    ``backbone_config``, for tests); ``layers`` keeps the first n decoder layers (CPU profiles). All weights are
    fine-tuned (LC-Rec tunes the LLM with its new index tokens)."""

    def __init__(
        self,
        backbone: str = "smollm2",
        backbone_config: dict | None = None,
        layers: int | None = None,
        max_history: int | None = 20,
        epochs: int = 4,
        samples_per_epoch: int | None = None,
        batch_size: int = 32,
        lr: float = 5e-4,
        weight_decay: float = 0.01,
        patience: int = 2,
        eval_every: int = 1,
    ):
        if epochs < 1 or batch_size < 1 or lr <= 0:
            raise ConfigError("lcrec: epochs >= 1, batch_size >= 1 and lr > 0 are required")
        self.backbone, self.backbone_config, self.layers = backbone, backbone_config, layers
        self.max_history, self.epochs, self.samples_per_epoch = max_history, epochs, samples_per_epoch
        self.batch_size, self.lr, self.weight_decay = batch_size, lr, weight_decay
        self.patience, self.eval_every = patience, eval_every
        self.model: PromptLM | None = None
        self.history: list[dict] = []
        self.best_epoch = 0

    def fit(self, data, tokenizer, validate, ctx) -> None:
        if getattr(tokenizer, "kind", None) != "discrete":
            raise ConfigError(f"lcrec needs a discrete tokenizer (lcrec_ids), got kind '{tokenizer.kind}'")
        codes, sizes = semantic_ids(tokenizer, data.n_items)
        check_unique(codes)
        self.codes = codes.to(ctx.device)
        lm, tok = load_backbone(self.backbone, ctx.cache_dir, self.backbone_config, ctx.seed)
        truncate_layers(lm, self.layers)
        self.model = PromptLM(lm, tok, sizes).to(ctx.device)
        self.max_history = min(self.max_history or data.max_history, data.max_history)
        histories, targets, _ = data.train_pairs(self.max_history)
        if targets.numel() == 0:
            raise TrainingError("lcrec: no training pairs; every training sequence has a single item")
        job = LCRecJob(self, histories, targets, ctx.seed)
        stopper = EarlyStopping(self.model, validate, self.patience, self.eval_every, self.epochs)

        def end_epoch(epoch: int, record: dict, last: bool) -> bool:
            stop = stopper.update(epoch, {"epoch": epoch, **record})
            ctx.log_epoch("lcrec", stopper.history[-1])
            return stop

        distributed.train_epochs(
            job,
            self.model,
            ctx.torch_generator(),
            ctx.device,
            end_epoch,
            progress=lambda starts, epoch: ctx.progress(starts, desc=f"lcrec epoch {epoch}"),
        )
        stopper.restore()
        self.history, self.best_epoch = stopper.history, stopper.best_epoch

    def history_codes(self, items: torch.Tensor) -> torch.Tensor:
        return self.codes[items.clamp(min=0)].masked_fill((items < 0).unsqueeze(-1), -1)

    def generate(self, batch, ctx) -> LCRecDecoder:
        items = batch.items[:, -self.max_history :].to(ctx.device)
        tokens, mask = self.model.rows(self.history_codes(items))
        return LCRecDecoder(self.model, tokens, mask)

    def health(self) -> dict[str, float]:
        return {
            "best_epoch": float(self.best_epoch),
            "epochs_run": float(len(self.history)),
            "final_train_loss": float(self.history[-1]["loss"]) if self.history else float("nan"),
        }


class LCRecJob(distributed.DataParallelJob):
    """Shuffled (history, next item) pairs, the answer's index tokens' cross-entropy summed."""

    def __init__(self, generator: LCRec, histories: torch.Tensor, targets: torch.Tensor, seed: int):
        self.generator, self.histories, self.targets = generator, histories, targets
        self.epochs, self.batch_size = generator.epochs, generator.batch_size
        self.eval_every, self.seed = generator.eval_every, seed

    def build_model(self, device) -> PromptLM:
        return self.generator.model

    def optimizer(self, model):
        return torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=self.generator.lr,
            weight_decay=self.generator.weight_decay,
        ), None

    def epoch_order(self, rng: torch.Generator) -> torch.Tensor:
        order = torch.randperm(self.targets.shape[0], generator=rng)
        return order[: self.generator.samples_per_epoch] if self.generator.samples_per_epoch else order

    def nonfinite(self, name: str, value: float) -> None:
        raise TrainingError(f"lcrec: the loss became {value}; lower lr (now {self.generator.lr})")

    def summed_loss(self, model, rows, device):
        g = self.generator
        histories = self.histories[rows].to(device)
        targets = g.codes[self.targets[rows].to(device)]
        return model(g.history_codes(histories), targets)
