"""ContRec's trainable parts around the LLM: token projector (or code tables), condition encoder, diffusion head.

Also the passes through the backbone that use them (``embed_prompt``, ``lm_and_condition``, ``greedy_generate``).
Imports backbone.py, diffusion.py, packing.py and prompt.py of the plugin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import inner_model
from .diffusion import GaussianDiffusion
from .packing import packed_states
from .prompt import PromptBatch


class TokenSource(nn.Module):
    """Maps slot indices to vectors in the LLM's embedding space.

    Continuous tokenizers: ``LayerNorm -> Linear(D, H)`` over the sigma-VAE tokens, either frozen (the encoders'
    weights fixed) or fine-tuned (the pre-trained encoders join the optimiser). ``noise`` is a separate switch:
    in training the encoders run on the batch's entities with their training-time noise (the sigma-VAE's
    z = mu + sigma * eps; masking for DeftRec's encoder), frozen or not; at inference, and with ``noise: False``,
    the tokens are the noiseless mu. (Before ``token_noise`` existed, frozen meant "fixed and noiseless" and the
    frozen-vs-finetune ablation mostly measured the noise.) Discrete tokenizers: one learned table per codebook
    (atomic ids count as one codebook).
    """

    def __init__(self, tokenizer, n_items: int, hidden: int, emb_std: float, finetune: bool, noise: bool = True):
        super().__init__()
        self.kind = getattr(tokenizer, "kind", "continuous")
        self.n_items = n_items
        if self.kind == "continuous":
            items = tokenizer.encode(torch.arange(n_items)).float()
            self.k, dim = items.shape[1], items.shape[2]
            self.proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden))
            nn.init.normal_(self.proj[1].weight, std=emb_std / dim**0.5)
            nn.init.zeros_(self.proj[1].bias)
            has_model = getattr(tokenizer, "item_model", None) is not None
            self.finetune, self.noise = finetune and has_model, noise and has_model
            self.models = nn.ModuleList()
            self._fixed: list[nn.Module] = []  # frozen encoders that only add the noise: not parameters here
            if self.finetune:  # the pre-trained encoders join the optimiser (eval mode: no dropout, running BN)
                self.models.append(tokenizer.item_model)
            elif self.noise:
                self._fixed.append(tokenizer.item_model)
            if self.finetune or self.noise:
                self.register_buffer("item_inputs", tokenizer.item_inputs.float(), persistent=False)
            self.register_buffer("item_tokens", items, persistent=False)
            users = getattr(tokenizer, "_users", None)
            self.user_k = 0 if users is None else users.shape[1]
            if users is not None:
                self.register_buffer("user_tokens", users.float(), persistent=False)
                if (self.finetune or self.noise) and tokenizer.user_model is not None:
                    (self.models if self.finetune else self._fixed).append(tokenizer.user_model)
                    self.register_buffer("user_inputs", tokenizer.user_inputs.float(), persistent=False)
        else:
            codes = tokenizer.encode(torch.arange(n_items)).long()
            codes = codes.unsqueeze(1) if codes.dim() == 1 else codes
            sizes = getattr(tokenizer, "codebook_sizes", None) or [int(c) + 1 for c in codes.max(0).values]
            offsets = torch.tensor([0, *sizes[:-1]]).cumsum(0)
            self.k, self.user_k, self.finetune, self.noise = codes.shape[1], 0, False, False
            self.register_buffer("codes", codes + offsets, persistent=False)
            self.table = nn.Embedding(int(sum(sizes)), hidden)
            nn.init.normal_(self.table.weight, std=emb_std)

    def _continuous(
        self,
        idx: torch.Tensor,
        n_entities_offset: int,
        k: int,
        tokens: torch.Tensor,
        model_index: int,
        inputs_name: str,
    ) -> torch.Tensor:
        entity, slot = (idx - n_entities_offset) // k, (idx - n_entities_offset) % k
        models = self.models if self.finetune else self._fixed
        if len(models) > model_index and (self.finetune or self.training):
            uniq, inverse = torch.unique(entity, return_inverse=True)
            model = models[model_index]
            model.eval()
            inputs = getattr(self, inputs_name)[uniq]
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.finetune):
                z = model.to(inputs.device).encode(inputs, noise=self.training and self.noise)
            return self.proj(z[inverse, slot])
        return self.proj(tokens[entity, slot])

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Vectors ``[n, H]`` for slot indices ``[n]`` (``entity * K + k``; users after all items)."""
        if self.kind != "continuous":
            return self.table(self.codes.flatten()[idx])
        is_user = idx >= self.n_items * self.k
        if not bool(is_user.any()):
            return self._continuous(idx, 0, self.k, self.item_tokens, 0, "item_inputs")
        items = self._continuous(idx[~is_user], 0, self.k, self.item_tokens, 0, "item_inputs")
        users = self._continuous(idx[is_user], self.n_items * self.k, self.user_k, self.user_tokens, 1, "user_inputs")
        out = torch.zeros((idx.shape[0], items.shape[1]), device=idx.device, dtype=items.dtype)  # bf16 under autocast
        out[~is_user] = items
        out[is_user] = users.to(items.dtype)
        return out


class ConditionEncoder(nn.Module):
    """DreamRec's Tenc over the condition states: project, positions, one causal self-attention block,
    and the state at the last valid position. Works for any mask pattern (left or right padding)."""

    def __init__(self, hidden: int, dim: int, max_len: int, dropout: float = 0.1, proj_dropout: float = 0.2):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(hidden, dim), nn.ReLU(), nn.Dropout(proj_dropout))
        self.positions = nn.Embedding(max_len, dim)
        self.dropout, self.norm = nn.Dropout(dropout), nn.LayerNorm(dim)
        self.block = nn.TransformerEncoderLayer(dim, 1, dim, dropout, batch_first=True, norm_first=True)
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.bool()
        rank = (mask.long().cumsum(1) - 1).clamp(min=0, max=self.positions.num_embeddings - 1)
        x = self.norm(self.dropout(self.proj(states.float()) + self.positions(rank)))
        length = x.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
        x = self.out_norm(self.block(x, src_mask=causal, src_key_padding_mask=~mask & mask.any(1, keepdim=True)))
        last = (mask.long() * torch.arange(1, length + 1, device=x.device)).argmax(1)
        return x[torch.arange(x.shape[0], device=x.device), last]


def embed_prompt(lm: nn.Module, source: TokenSource, prompt: PromptBatch) -> torch.Tensor:
    """Token embeddings with the placeholder slots overwritten by the entities' continuous tokens."""
    emb = lm.get_input_embeddings()(prompt.input_ids)
    where = prompt.slots >= 0
    if bool(where.any()):
        emb = emb.clone()
        emb[where] = source(prompt.slots[where]).to(emb.dtype)
    return emb


def lm_and_condition(
    lm: nn.Module, source: TokenSource, prompt: PromptBatch, condition: str, pack_width: int | None = None
):
    """Teacher-forced pass: LM loss *summed* over the answer tokens and their count, and the condition states
    ``[B, A, H]`` + mask.

    ``hidden``: last-layer states at the positions that emit the answer tokens (next-token diffusion);
    ``embedding``: input embeddings of the answer tokens (the released code's condition);
    ``prompt``: the one last-layer state at the last prompt position (the state that emits the first answer
    token). It depends on the prompt only, so training (teacher-forced answer) and inference (generated answer)
    condition on the same thing; ``hidden`` and ``embedding`` see the *true* answer's tokens in training and the
    generated ones at inference, which differ whenever the backbone cannot write the answer (docs/contrec.md,
    "Why more training hurt");
    ``history``: the last-layer states at the prompt's continuous-token slots (each history item's K tokens, and
    the user's) plus the last prompt position, so the condition encoder (DreamRec's Tenc) reads every history
    item as the LLM contextualised it. Also prompt-only, equal in training and at inference.
    """
    emb = embed_prompt(lm, source, prompt)
    if pack_width is not None:  # speed.pack: the same states from packed rows (plugins/contrec/packing.py)
        states = packed_states(lm, emb, prompt, pack_width)
    else:
        states = inner_model(lm)(
            inputs_embeds=emb, attention_mask=prompt.attention_mask, position_ids=prompt.position_ids
        ).last_hidden_state
    emits = prompt.answer[:, 1:]  # position p emits token p + 1
    logits = lm.get_output_embeddings()(states[:, :-1][emits])
    lm_sum = F.cross_entropy(logits.float(), prompt.input_ids[:, 1:][emits], reduction="sum")
    width = int(prompt.answer.sum(1).max())
    if condition in ("prompt", "history"):  # the first emitting position of each row is its last prompt position
        first, rows = emits.long().argmax(1), torch.arange(states.shape[0], device=states.device)
        if condition == "prompt":
            return lm_sum, int(emits.sum()), states[rows, first].unsqueeze(1), torch.ones_like(emits[:, :1])
        mask = prompt.slots >= 0
        mask[rows, first] = True
        return lm_sum, int(emits.sum()), states, mask
    if condition == "hidden":
        cond, mask = states[:, -width - 1 : -1], emits[:, -width:]
    else:
        cond, mask = emb[:, -width:], prompt.answer[:, -width:]
    return lm_sum, int(emits.sum()), cond, mask


@torch.no_grad()
def greedy_generate(
    lm: nn.Module, source: TokenSource, prompt: PromptBatch, max_new: int, eos: int, condition: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy decoding with a KV cache. Returns tokens ``[B, G]``, condition states ``[B, G, H]`` and their mask
    (valid up to and including the end-of-sequence token)."""
    inner, head, table = inner_model(lm), lm.get_output_embeddings(), lm.get_input_embeddings()
    mask, positions = prompt.attention_mask, prompt.position_ids
    out = inner(
        inputs_embeds=embed_prompt(lm, source, prompt), attention_mask=mask, position_ids=positions, use_cache=True
    )
    state, cache = out.last_hidden_state[:, -1], out.past_key_values
    done = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)
    tokens, conds, valid = [], [], []
    pos = positions[:, -1:]
    first_state, prompt_states = state, out.last_hidden_state
    for step in range(max_new):
        token = head(state).argmax(-1)
        valid.append(~done)
        conds.append(state if condition in ("hidden", "prompt") else table(token))
        tokens.append(token)
        done = done | (token == eos)
        if bool(done.all()) or step + 1 == max_new:
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        pos = pos + 1
        out = inner(
            inputs_embeds=table(token).unsqueeze(1),
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
        )
        state, cache = out.last_hidden_state[:, -1], out.past_key_values
    tokens, valid = torch.stack(tokens, 1), torch.stack(valid, 1)
    if condition == "prompt":  # the state at the last prompt position only (as in training)
        return tokens, first_state.unsqueeze(1), torch.ones_like(valid[:, :1])
    if condition == "history":  # the prompt's token-slot states and its last position (as in training)
        slots = prompt.slots >= 0
        slots[:, -1] = True  # rows are left-padded: the last column is every row's last prompt position
        return tokens, prompt_states, slots
    return tokens, torch.stack(conds, 1), valid


class DiffusionHead(nn.Module):
    """Condition encoder + diffusion over the (scaled) collaborative item space."""

    def __init__(
        self, hidden: int, cond_dim: int, max_len: int, diffusion: GaussianDiffusion, dropout: float | None = None
    ):
        super().__init__()
        rates = {} if dropout is None else {"dropout": dropout, "proj_dropout": dropout}
        self.encoder = ConditionEncoder(hidden, cond_dim, max_len, **rates)
        self.diffusion = diffusion

    def loss(self, states, mask, x0, generator=None, draws=None, repeats: int = 1):
        """Diffusion loss and x0 estimates; ``repeats`` > 1 reuses each condition for that many (t, noise) draws
        (rows ``i * repeats .. i * repeats + repeats - 1`` belong to sample i)."""
        cond = self.encoder(states, mask)
        self.last_condition = cond  # [B, cond_dim], before the repeats: what dispersive_on: condition spreads
        if repeats > 1:
            cond, x0 = cond.repeat_interleave(repeats, dim=0), x0.repeat_interleave(repeats, dim=0)
        return self.diffusion.loss(x0, cond, generator, draws)

    def sample(self, states, mask, generator=None) -> torch.Tensor:
        return self.diffusion.sample(self.encoder(states, mask), generator=generator)
