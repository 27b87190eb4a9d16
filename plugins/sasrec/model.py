"""SASRec (Kang & McAuley, 2018): a causal self-attention encoder over item-id sequences."""

from __future__ import annotations

import torch
from torch import nn


class SASRecModel(nn.Module):
    """Item ids are shifted by one inside the model so that 0 is padding (-1 outside)."""

    def __init__(self, n_items: int, hidden: int, layers: int, heads: int, dropout: float, max_len: int):
        super().__init__()
        self.heads = heads
        self.item_embedding = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            hidden,
            heads,
            dim_feedforward=hidden * 4,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[b, L, hidden]`` for left-padded item ids ``[b, L]`` (-1 = padding)."""
        valid = items >= 0
        length = items.shape[1]
        positions = torch.arange(length, device=items.device)
        x = self.item_embedding(items + 1) + self.position_embedding(positions)
        x = self.dropout(x * valid.unsqueeze(-1))
        causal = torch.ones(length, length, dtype=torch.bool, device=items.device).tril()
        allowed = causal & (valid.unsqueeze(1) | torch.eye(length, dtype=torch.bool, device=items.device))
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=items.device).masked_fill(~allowed, float("-inf"))
        mask = mask.repeat_interleave(self.heads, dim=0)
        return self.norm(self.encoder(x, mask=mask))

    def item_weights(self) -> torch.Tensor:
        """Output embeddings of items ``0..n-1`` (shared with the input table)."""
        return self.item_embedding.weight[1:]
