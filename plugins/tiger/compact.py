"""A compact encoder-decoder for semantic ids, built for fast constrained beam search.

Same shape as TIGER's T5 (bidirectional encoder, causal decoder, shared token embeddings) with learned
absolute positions instead of T5's relative bias, so attention runs on PyTorch's fused SDPA kernels.
The decoder's cross-attention keys and values are computed once per user and shared by all its beams:
the beams of a user are laid out along the query axis instead of being copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .model import TokenLayout


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.self_qkv = nn.Linear(d_model, 3 * d_model)
        self.self_out = nn.Linear(d_model, d_model)
        self.cross_q = nn.Linear(d_model, d_model)
        self.cross_kv = nn.Linear(d_model, 2 * d_model)
        self.cross_out = nn.Linear(d_model, d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)
        self.p = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [b, n, d] -> [b, heads, n, d/heads]
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.cross_kv(memory).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(
        self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], memory_mask: torch.Tensor
    ) -> torch.Tensor:
        """``x`` [b, w, t, d]: w beams of t tokens per user; ``kv`` per user; ``memory_mask`` [b, 1, 1, S]."""
        b, w, t, d = x.shape
        p = self.p if self.training else 0.0
        h = self.norm1(x).view(b * w, t, d)
        q, k, v = (self._split(z) for z in self.self_qkv(h).chunk(3, dim=-1))
        h = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        x = x + self.dropout(self.self_out(h.transpose(1, 2).reshape(b, w, t, d)))
        q = self._split(self.cross_q(self.norm2(x)).view(b, w * t, d))
        h = F.scaled_dot_product_attention(q, *kv, attn_mask=memory_mask, dropout_p=p)
        x = x + self.dropout(self.cross_out(h.transpose(1, 2).reshape(b, w, t, d)))
        return x + self.dropout(self.ff(self.norm3(x)))


class CompactSeq2Seq(nn.Module):
    def __init__(
        self,
        layout: TokenLayout,
        max_source: int,
        d_model: int,
        d_ff: int,
        heads: int,
        encoder_layers: int,
        decoder_layers: int,
        dropout: float,
    ):
        super().__init__()
        self.layout = layout
        self.embedding = nn.Embedding(layout.vocab_size, d_model, padding_idx=0)
        self.source_positions = nn.Embedding(max_source, d_model)
        self.target_positions = nn.Embedding(len(layout.codebook_sizes) + 1, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, d_ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(
            layer, encoder_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.decoder = nn.ModuleList(DecoderLayer(d_model, heads, d_ff, dropout) for _ in range(decoder_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.embedding.weight, std=d_model**-0.5)

    def encode(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.dropout(self.embedding(input_ids) + self.source_positions(positions))
        return self.encoder(x, src_key_padding_mask=~mask)

    def memory(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[list, torch.Tensor]:
        """Per-layer cross-attention keys/values and the additive memory mask, computed once per user."""
        kvs = [layer.memory_kv(states) for layer in self.decoder]
        memory_mask = torch.zeros(mask.shape, dtype=states.dtype, device=states.device)
        memory_mask = memory_mask.masked_fill(~mask, float("-inf"))[:, None, None, :]
        return kvs, memory_mask

    def decode(self, tokens: torch.Tensor, kvs: list, memory_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``[b, w, t, vocab]`` for decoder inputs ``[b, w, t]`` (start token first)."""
        positions = torch.arange(tokens.shape[-1], device=tokens.device)
        x = self.dropout(self.embedding(tokens) + self.target_positions(positions))
        for layer, kv in zip(self.decoder, kvs, strict=True):
            x = layer(x, kv, memory_mask)
        return self.final_norm(x) @ self.embedding.weight.T

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss (so that DistributedDataParallel, which wraps ``forward``, sees it)."""
        return self.loss(input_ids, mask, labels)

    def loss(self, input_ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Teacher-forced cross-entropy of each target code over the whole vocabulary (as T5 trains)."""
        kvs, memory_mask = self.memory(self.encode(input_ids, mask), mask)
        start = torch.zeros_like(labels[:, :1])
        logits = self.decode(torch.cat([start, labels[:, :-1]], 1).unsqueeze(1), kvs, memory_mask)[:, 0]
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


class CompactCodeDecoder:
    """CodeDecoder over a CompactSeq2Seq: no copies of the encoder states per beam."""

    def __init__(self, model: CompactSeq2Seq, kvs: list, memory_mask: torch.Tensor, autocast_dtype):
        self.model, self.kvs, self.memory_mask, self.autocast_dtype = model, kvs, memory_mask, autocast_dtype

    def __len__(self) -> int:
        return self.memory_mask.shape[0]

    def select(self, rows: slice) -> CompactCodeDecoder:
        return CompactCodeDecoder(
            self.model, [(k[rows], v[rows]) for k, v in self.kvs], self.memory_mask[rows], self.autocast_dtype
        )

    def log_probs(self, prefix: torch.Tensor) -> torch.Tensor:
        b, w, t = prefix.shape
        layout = self.model.layout
        start = torch.zeros((b, w, 1), dtype=torch.long, device=prefix.device)
        tokens = torch.cat([start, layout.code_tokens(prefix)], dim=2)
        with torch.autocast(prefix.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            logits = self.model.decode(tokens, self.kvs, self.memory_mask)[:, :, -1].float()
        lo = layout.offsets[t]
        return logits.log_softmax(-1)[..., lo : lo + layout.codebook_sizes[t]]
