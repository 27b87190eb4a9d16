"""LC-Rec's generator (Zheng et al., ICDE 2024, sec. III-B/C; the sequential item prediction task): a causal LLM
whose vocabulary gains one token per (level, code) of the item indices, fine-tuned on prompts that list the
history's index tokens and answer with the next item's index tokens; decoded by the trie-constrained beam
retriever of plugin ``tiger`` (``beam``), so that it never emits an index that is no item."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from genrec_bench_plugins.contrec.backbone import load_backbone, truncate_layers
from genrec_bench_plugins.tiger.prefix_index import check_unique, semantic_ids

from genrec_bench import distributed
from genrec_bench.errors import ConfigError, TrainingError
from genrec_bench.interfaces import Generator
from genrec_bench.training import EarlyStopping, check_samples_per_epoch, epoch_samples

#: bf16 autocast on a CPU with bf16 units under protocol precision auto: on, from
#: benchmarks/scripts/precision_compare.py over seeds 0-2 (training 1.61x and beam decoding 1.5x faster, validation
#: NDCG@10 within seed noise; docs/contrec.md, "Precision")
CPU_BF16_PAYS = True
PROMPT = "Here are the user's historical interactions: "
QUESTION = " Try to predict the next item the user will interact with: "


class IdEmbedding(torch.nn.Module):
    """An input embedding whose pretrained vocabulary rows are frozen (a buffer) and whose index-token rows
    (ids >= ``vocab`` rows) are a trained parameter; the same rows as the resized embedding it replaces."""

    def __init__(self, vocab: torch.Tensor, ids: torch.Tensor):
        super().__init__()
        self.register_buffer("vocab", vocab, persistent=False)
        self.ids = torch.nn.Parameter(ids)

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([self.vocab, self.ids])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        base = self.vocab.shape[0]
        text = F.embedding(input_ids.clamp(max=base - 1), self.vocab)
        ids = F.embedding((input_ids - base).clamp(min=0), self.ids)
        return torch.where((input_ids >= base).unsqueeze(-1), ids, text)


class PromptLM(torch.nn.Module):
    """The LM with index tokens appended to its vocabulary; builds the token rows of prompts and answers.

    ``train_vocab``: ``all`` fine-tunes every embedding row (LC-Rec); ``ids`` freezes the pretrained
    vocabulary's rows (input embedding and head) and trains the index tokens' rows and the transformer: the
    same model, without a dense gradient and optimizer state over the 49k pretrained rows on every step."""

    def __init__(
        self,
        lm,
        tokenizer,
        codebook_sizes: list[int],
        prompt: str = PROMPT,
        question: str = QUESTION,
        train_vocab: str = "all",
    ):
        super().__init__()
        if train_vocab not in ("all", "ids"):
            raise ConfigError(f"lcrec: train_vocab is 'all' or 'ids', got {train_vocab!r}")
        self.lm = lm
        self.pad = int(tokenizer.pad_token_id)
        self.base = lm.get_input_embeddings().weight.shape[0]
        self.offsets = [self.base + sum(codebook_sizes[:i]) for i in range(len(codebook_sizes))]
        self.sizes = list(codebook_sizes)
        lm.resize_token_embeddings(self.base + sum(codebook_sizes), mean_resizing=False)
        self.split_vocab = train_vocab == "ids"
        self.head: IdEmbedding | None = None
        if self.split_vocab:
            embedding, head = lm.get_input_embeddings(), lm.get_output_embeddings()
            if head.bias is not None:
                raise ConfigError("lcrec: train_vocab 'ids' needs an LM head without bias")
            split = IdEmbedding(embedding.weight.data[: self.base].clone(), embedding.weight.data[self.base :].clone())
            if head.weight is not embedding.weight:  # untied: the head's rows split the same way
                self.head = IdEmbedding(head.weight.data[: self.base].clone(), head.weight.data[self.base :].clone())
            lm.set_input_embeddings(split)
            lm.lm_head = None  # the head is the split rows now: no stale full copy to train or keep
        for name, text in (("prompt", prompt), ("question", question)):  # an empty text is no tokens
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            self.register_buffer(name, torch.tensor(ids, dtype=torch.long), persistent=False)
        self.register_buffer("code_offsets", torch.tensor(self.offsets), persistent=False)
        # the decoder's KV-cache argument, read once: transformers renamed past_key_values to cache (5.x
        # deprecates the old name)
        params = inspect.signature(self.decoder().forward).parameters
        self.cache_argument = "cache" if "cache" in params else "past_key_values"

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

    def states(self, tokens: torch.Tensor, mask: torch.Tensor, cache=None, past: torch.Tensor | None = None):
        """Final hidden states ``[b, T, d]`` of ``tokens`` (and the KV cache when ``cache`` is a ``DynamicCache``
        to fill). ``past``: the mask of tokens already in ``cache`` (``[b, P]``), so the positions continue."""
        full = mask if past is None else torch.cat([past, mask], dim=1)
        positions = (full.long().cumsum(1) - 1).clamp(min=0)[:, -tokens.shape[1] :]
        inner = self.decoder()
        if cache is None:
            return inner(input_ids=tokens, attention_mask=full.long(), position_ids=positions).last_hidden_state
        kwargs = {self.cache_argument: cache, "use_cache": True}
        return inner(input_ids=tokens, attention_mask=full.long(), position_ids=positions, **kwargs).last_hidden_state

    def decoder(self):
        return self.lm.get_decoder() if hasattr(self.lm, "get_decoder") else self.lm.model

    def logits(self, tokens: torch.Tensor, mask: torch.Tensor, last: int) -> torch.Tensor:
        """Full-vocabulary logits at the ``last`` positions only ``[b, last, V]`` (the plain path; the head over
        every prompt position would be ``b x T x V`` floats, 26 GB for one beam step of 1,000 users x 20 beams)."""
        states = self.states(tokens, mask)[:, -last:]
        if not self.split_vocab:
            return self.lm.get_output_embeddings()(states)
        return F.linear(states, self.split_head().weight)

    def split_head(self) -> IdEmbedding:
        """The head's rows under ``train_vocab: ids``: the input embedding's when tied, else its own split."""
        return self.head if self.head is not None else self.lm.get_input_embeddings()

    def code_logits(self, states: torch.Tensor, level: int) -> torch.Tensor:
        """Logits of level ``level``'s index tokens only ``[..., size]``: the LM head's rows of those tokens,
        equal to the full head's logits sliced to them (the head is linear), at ``size / V`` of its cost."""
        start, size = self.offsets[level], self.sizes[level]
        if self.split_vocab:
            return F.linear(states, self.split_head().ids[start - self.base : start - self.base + size])
        head = self.lm.get_output_embeddings()
        bias = None if head.bias is None else head.bias[start : start + size]
        return F.linear(states, head.weight[start : start + size], bias)

    def forward(self, history_codes: torch.Tensor, target_codes: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Summed cross-entropy of the answer's index tokens, each restricted to its level's codes."""
        tokens, mask = self.rows(history_codes)
        answer = target_codes + self.code_offsets
        full = torch.cat([tokens, answer], dim=1)
        full_mask = torch.cat([mask, torch.ones_like(answer, dtype=torch.bool)], dim=1)
        k = answer.shape[1]
        states = self.states(full, full_mask)[:, -(k + 1) : -1]  # the positions that predict each answer token
        loss = states.new_zeros((), dtype=torch.float32)
        for level in range(k):
            logits = self.code_logits(states[:, level], level).float()
            loss = loss + F.cross_entropy(logits, target_codes[:, level], reduction="sum")
        return loss, int(target_codes.numel())


class LCRecDecoder:
    """What the ``beam`` retriever reads: ``log_probs(prefix [b, w, t]) -> [b, w, size of level t]``.

    The prompt is run once per user (level 0 reads its last state; its KV cache is kept); level t > 0 runs only
    the t answer tokens of each beam over that cache, and the head only over the level's index tokens. Both
    paths normalise over the level's codes, as the loss does (training never asks the model to put mass on
    other tokens, so a full-vocabulary softmax would mean nothing here); the trie then masks the codes that lead
    to no item. ``cached: false`` is the plain path (every beam runs its whole prompt, the full-vocabulary head
    then sliced), kept to test the fast path against."""

    def __init__(
        self,
        model: PromptLM,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        cached: bool = True,
        dtype: torch.dtype | None = None,
    ):
        self.model, self.tokens, self.mask, self.cached = model, tokens, mask, cached
        self.dtype = dtype  # autocast dtype of every forward pass (None: full precision)
        self._cache = None
        self._last: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def select(self, rows: slice) -> LCRecDecoder:
        return LCRecDecoder(self.model, self.tokens[rows], self.mask[rows], self.cached, self.dtype)

    @torch.no_grad()
    def log_probs(self, prefix: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.tokens.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            return self._log_probs(prefix)

    def _log_probs(self, prefix: torch.Tensor) -> torch.Tensor:
        if not self.cached:
            return self._plain_log_probs(prefix)
        from transformers import DynamicCache

        b, w, t = prefix.shape
        model = self.model
        if self._cache is None:
            self._cache = DynamicCache()
            self._last = model.states(self.tokens, self.mask, self._cache)[:, -1]
        if t == 0:
            states = self._last.unsqueeze(1).expand(b, w, -1)
        else:
            cache = _expanded_cache(self._cache, w)
            answer = (prefix + model.code_offsets[:t]).reshape(b * w, t)
            past = self.mask.repeat_interleave(w, dim=0)
            ones = torch.ones_like(answer, dtype=torch.bool)
            states = model.states(answer, ones, cache, past)[:, -1].view(b, w, -1)
        return F.log_softmax(model.code_logits(states, t).float(), dim=-1)

    def _plain_log_probs(self, prefix: torch.Tensor) -> torch.Tensor:
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


def _expanded_cache(cache, width: int):
    """A new ``DynamicCache`` holding ``cache``'s keys and values repeated ``width`` times per row (one copy per
    beam, so the beams' answer tokens can be appended without touching the prompt's cache)."""
    from transformers import DynamicCache

    out = DynamicCache()
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys.repeat_interleave(width, dim=0), layer.values.repeat_interleave(width, dim=0), i)
    return out


class LCRec(Generator):
    """``backbone``: ``smollm2`` (SmolLM2-135M-Instruct, ContRec's loader) or ``random`` (a tiny Llama from
    ``backbone_config``, for tests); ``layers`` keeps the first n decoder layers (CPU profiles). All weights are
    fine-tuned (LC-Rec tunes the LLM with its new index tokens). ``prompt`` and ``question``: the text before
    and after the history's index tokens. ``cached_beam``: decode with the prompt's KV cache and the id-token
    head (:class:`LCRecDecoder`); false is the plain path, same scores up to float rounding. ``train_vocab``:
    ``all`` (every embedding row) or ``ids`` (the pretrained vocabulary frozen, :class:`PromptLM`)."""

    def __init__(
        self,
        backbone: str = "smollm2",
        backbone_config: dict | None = None,
        layers: int | None = None,
        max_history: int | None = 20,
        epochs: int = 4,
        samples_per_epoch: int | float | None = None,
        batch_size: int = 32,
        lr: float = 5e-4,
        weight_decay: float = 0.01,
        patience: int = 2,
        eval_every: int = 1,
        prompt: str = PROMPT,
        question: str = QUESTION,
        cached_beam: bool = True,
        train_vocab: str = "all",
    ):
        if epochs < 1 or batch_size < 1 or lr <= 0:
            raise ConfigError("lcrec: epochs >= 1, batch_size >= 1 and lr > 0 are required")
        self.backbone, self.backbone_config, self.layers = backbone, backbone_config, layers
        check_samples_per_epoch(samples_per_epoch, "lcrec")
        self.max_history, self.epochs, self.samples_per_epoch = max_history, epochs, samples_per_epoch
        self.batch_size, self.lr, self.weight_decay = batch_size, lr, weight_decay
        self.patience, self.eval_every = patience, eval_every
        self.prompt, self.question, self.cached_beam = prompt, question, cached_beam
        self.train_vocab = train_vocab
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
        self.model = PromptLM(lm, tok, sizes, self.prompt, self.question, self.train_vocab).to(ctx.device)
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
            dtype=ctx.compute_dtype(cpu_bf16_pays=CPU_BF16_PAYS),
        )
        stopper.restore()
        self.history, self.best_epoch = stopper.history, stopper.best_epoch
        self.training = stopper.summary()

    def history_codes(self, items: torch.Tensor) -> torch.Tensor:
        return self.codes[items.clamp(min=0)].masked_fill((items < 0).unsqueeze(-1), -1)

    def generate(self, batch, ctx) -> LCRecDecoder:
        items = batch.items[:, -self.max_history :].to(ctx.device)
        tokens, mask = self.model.rows(self.history_codes(items))
        return LCRecDecoder(self.model, tokens, mask, self.cached_beam, ctx.compute_dtype(cpu_bf16_pays=CPU_BF16_PAYS))

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
        n = self.targets.shape[0]
        return torch.randperm(n, generator=rng)[: epoch_samples(self.generator.samples_per_epoch, n)]

    def nonfinite(self, name: str, value: float) -> None:
        raise TrainingError(f"lcrec: the loss became {value}; lower lr (now {self.generator.lr})")

    def summed_loss(self, model, rows, device):
        g = self.generator
        histories = self.histories[rows].to(device)
        targets = g.codes[self.targets[rows].to(device)]
        return model(g.history_codes(histories), targets)
