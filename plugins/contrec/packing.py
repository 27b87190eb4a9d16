"""Sequence packing for ContRec's teacher-forced LM pass: several prompts share one row, none attends across.

ContRec's training prompts are left-padded to the longest row of the batch; on Amazon Beauty a 20-item history
cap gives prompts from about 40 to 400 tokens, so a padded batch spends a large share of its matrix work on
padding. :func:`packed_states` places the rows' valid tokens end to end in bins of ``capacity`` tokens (first
fit, longest first), restarts the position ids at every prompt, and lets the backbone's attention build the
block-diagonal causal mask from those position ids (transformers' packed-sequence detection, used when no
attention mask and no cache are passed). The states are scattered back into the padded ``[B, L, H]`` layout,
so the rest of :func:`genrec_bench_plugins.contrec.model.lm_and_condition` (answer logits, condition states) is
unchanged and the loss equals the padded batch's up to float rounding (tested).

``speed: {pack: true, pack_width: 0}``: bins as wide as the batch's longest prompt (``pack_width`` > that widens
them, e.g. 1024, for fewer, fuller rows).

Imports backbone.py and prompt.py of the plugin (model.py imports this module, never the other way).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .backbone import inner_model
from .prompt import PromptBatch


def pack_plan(lengths: list[int], capacity: int) -> list[list[int]]:
    """Rows grouped into bins of at most ``capacity`` tokens: first fit, longest row first."""
    order = sorted(range(len(lengths)), key=lambda r: -lengths[r])
    bins: list[list[int]] = []
    room: list[int] = []
    for r in order:
        need = lengths[r]
        for b, free in enumerate(room):
            if need <= free:
                bins[b].append(r)
                room[b] -= need
                break
        else:
            bins.append([r])
            room.append(capacity - need)
    return bins


def pack_indices(mask: np.ndarray, capacity: int) -> tuple[np.ndarray, ...]:
    """For a left-padded ``mask [B, L]``: source (row, column) and destination (bin, slot) of every valid token,
    the packed position ids ``[P, capacity]`` and the bin count P."""
    lengths = mask.sum(1).astype(int).tolist()
    width = mask.shape[1]
    bins = pack_plan(lengths, capacity)
    src_r, src_c, dst_b, dst_s = [], [], [], []
    positions = np.tile(np.arange(capacity, dtype=np.int64), (len(bins), 1))  # tail padding: its own segment
    for b, rows in enumerate(bins):
        slot = 0
        for r in rows:
            n = lengths[r]
            src_r.append(np.full(n, r))
            src_c.append(np.arange(width - n, width))
            dst_b.append(np.full(n, b))
            dst_s.append(np.arange(slot, slot + n))
            positions[b, slot : slot + n] = np.arange(n)
            slot += n
        positions[b, slot:] = np.arange(capacity - slot)
    cat = lambda parts: np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)  # noqa: E731
    return cat(src_r), cat(src_c), cat(dst_b), cat(dst_s), positions, len(bins)


def packed_states(lm: nn.Module, emb: torch.Tensor, prompt: PromptBatch, pack_width: int = 0) -> torch.Tensor:
    """Last-layer states ``[B, L, H]`` of the left-padded prompts computed in packed rows (zeros at padding)."""
    rows, width, hidden = emb.shape
    capacity = max(width, int(pack_width or 0))
    mask = prompt.attention_mask.detach().cpu().numpy().astype(bool)
    src_r, src_c, dst_b, dst_s, positions, n_bins = pack_indices(mask, capacity)
    device = emb.device
    src_r, src_c, dst_b, dst_s = (torch.from_numpy(a).to(device) for a in (src_r, src_c, dst_b, dst_s))
    packed = emb.new_zeros(n_bins, capacity, hidden)
    packed[dst_b, dst_s] = emb[src_r, src_c]
    out = inner_model(lm)(
        inputs_embeds=packed, position_ids=torch.from_numpy(positions).to(device), use_cache=False
    ).last_hidden_state
    states = out.new_zeros(rows, width, out.shape[-1])
    states[src_r, src_c] = out[dst_b, dst_s]
    return states


def padded_states(lm: nn.Module, emb: torch.Tensor, prompt: PromptBatch) -> torch.Tensor:
    """The plain pass (what ``lm_and_condition`` does without packing)."""
    return inner_model(lm)(
        inputs_embeds=emb, attention_mask=prompt.attention_mask, position_ids=prompt.position_ids
    ).last_hidden_state


def packing_ratio(prompt: PromptBatch, pack_width: int = 0) -> tuple[int, int]:
    """(tokens in the padded batch, tokens in the packed rows): what packing saves on this batch."""
    mask = prompt.attention_mask.detach().cpu().numpy().astype(bool)
    capacity = max(mask.shape[1], int(pack_width or 0))
    n_bins = len(pack_plan(mask.sum(1).astype(int).tolist(), capacity))
    return int(mask.size), int(n_bins * capacity)


def adam_options(speed: dict, groups: list[dict]) -> dict:
    """``fused=True`` for AdamW when ``speed.fused_adam`` is set and every parameter lives on a CUDA device
    (one kernel per step instead of one per tensor); nothing otherwise."""
    params = [p for g in groups for p in g["params"]]
    if speed.get("fused_adam") and params and all(p.is_cuda for p in params):
        return {"fused": True}
    return {}
