"""HSTU (Zhai et al., ICML 2024, "Actions Speak Louder than Words", arXiv 2402.17152): the encoder.

One layer (paper eq. 1-3; the public code's ``SequentialTransductionUnitJagged`` with ``normalization="rel_bias"``,
``linear_config="uvqk"``, ``linear_activation="silu"``, ``concat_ua=False``):

    U, V, Q, K = split(SiLU(LayerNorm(X) W_uvqk))
    A          = SiLU(Q K^T + rab^p) / N * causal_mask        # pointwise, no softmax; N = padded length
    Y          = X + W_o Dropout(U * LayerNorm(A V))

``rab^p`` is the relative position bias of the public ``RelativeBucketedTimeAndPositionBasedBias``:
``bias[i, j] = w[N - 1 + j - i]`` with a learnt vector ``w`` of ``2 * max_len - 1`` values. Its time-bucket term
needs interaction timestamps, which genrec-bench's ``SplitData``/``UserBatch`` do not carry (sequences keep the
order only), so only the position term is used; see docs/hstu.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class HSTULayer(nn.Module):
    """One sequential transduction unit over left-padded sequences ``[b, N, d]``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dqk: int,
        dv: int,
        dropout: float,
        max_len: int,
        relative_bias: bool = True,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.dim, self.heads, self.dqk, self.dv, self.dropout, self.eps = dim, heads, dqk, dv, dropout, eps
        # public code: one [d, 2*H*dv + 2*H*dqk] parameter, N(0, 0.02), no bias; W_o a Linear with xavier init
        self.uvqk = nn.Parameter(torch.empty(dim, heads * (2 * dv + 2 * dqk)).normal_(0.0, 0.02))
        self.out = nn.Linear(heads * dv, dim)
        nn.init.xavier_uniform_(self.out.weight)
        self.pos_bias = nn.Parameter(torch.empty(2 * max_len - 1).normal_(0.0, 0.02)) if relative_bias else None

    def relative_bias(self, n: int) -> torch.Tensor:
        """``[n, n]``: ``w[n - 1 + j - i]`` for query ``i`` and key ``j`` (the public code's indexing)."""
        idx = torch.arange(n, device=self.pos_bias.device)
        return self.pos_bias[n - 1 + idx.unsqueeze(0) - idx.unsqueeze(1)]

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``x`` ``[b, N, d]``; ``allowed`` float ``[b, N, N]`` (1 where query i may read key j)."""
        b, n, _ = x.shape
        h = F.silu(F.layer_norm(x, (self.dim,), eps=self.eps) @ self.uvqk)
        hv, hq = self.heads * self.dv, self.heads * self.dqk
        u, v, q, k = h.split([hv, hv, hq, hq], dim=-1)
        scores = torch.einsum("bnhd,bmhd->bhnm", q.view(b, n, self.heads, self.dqk), k.view(b, n, self.heads, self.dqk))
        if self.pos_bias is not None:
            scores = scores + self.relative_bias(n)
        weights = F.silu(scores) / n * allowed.unsqueeze(1)
        attended = torch.einsum("bhnm,bmhd->bnhd", weights, v.view(b, n, self.heads, self.dv)).reshape(b, n, hv)
        gated = u * F.layer_norm(attended, (hv,), eps=self.eps)
        return x + self.out(F.dropout(gated, p=self.dropout, training=self.training))


class HSTUModel(nn.Module):
    """Item ids are shifted by one inside the model so that 0 is padding (-1 outside).

    Input: ``item_embedding * sqrt(d) + position_embedding``, dropout, padding zeroed (the public
    ``LearnablePositionalEmbeddingInputFeaturesPreprocessor``); output: the last layer's states, L2-normalised
    (``L2NormEmbeddingPostprocessor``, eps 1e-6). Items are scored by the dot product of L2-normalised vectors.
    """

    def __init__(
        self,
        n_items: int,
        dim: int,
        layers: int,
        heads: int,
        dqk: int,
        dv: int,
        dropout: float,
        linear_dropout: float,
        max_len: int,
        relative_bias: bool = True,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.dim, self.max_len, self.eps = dim, max_len, eps
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, dim)
        nn.init.trunc_normal_(self.item_embedding.weight, std=0.02)
        nn.init.uniform_(self.position_embedding.weight, -math.sqrt(1.0 / dim), math.sqrt(1.0 / dim))
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            HSTULayer(dim, heads, dqk, dv, linear_dropout, max_len, relative_bias, eps) for _ in range(layers)
        )

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """L2-normalised states ``[b, max_len, d]`` for left-padded ids ``[b, L]`` (-1 = padding, L <= max_len)."""
        if items.shape[1] < self.max_len:  # constant N: positions and the 1/N normalisation match training
            items = F.pad(items, (self.max_len - items.shape[1], 0), value=-1)
        valid = items >= 0
        n = items.shape[1]
        positions = torch.arange(n, device=items.device)
        x = self.item_embedding(items + 1) * math.sqrt(self.dim) + self.position_embedding(positions)
        x = self.dropout(x) * valid.unsqueeze(-1)
        causal = torch.ones(n, n, dtype=torch.bool, device=items.device).tril()
        allowed = (causal & valid.unsqueeze(1)).to(x.dtype)  # left padding: padded keys must be masked too
        for layer in self.layers:
            x = layer(x, allowed) * valid.unsqueeze(-1)
        return F.normalize(x, dim=-1, eps=self.eps)

    def item_weights(self) -> torch.Tensor:
        """L2-normalised embeddings of items ``0..n-1`` (shared with the input table)."""
        return F.normalize(self.item_embedding.weight[1:], dim=-1, eps=self.eps)
