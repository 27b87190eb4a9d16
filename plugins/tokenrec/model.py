"""TokenRec's generative retrieval model (Qu et al. 2024, arXiv 2406.10450, sec. 4; ../shared/docs/paper-notes.md
sec. 8): a T5 encoder-decoder reads the history's MQ-VAE item tokens; the decoder always reads the same fixed
prompt; its last states, flattened, go through an MLP head onto the collaborative item space.

Token layout: 0 = padding, 1 = end of the encoder input, ``2 .. 2 + prompt_length - 1`` = the fixed decoder
prompt, then the codes of each codebook in its own range (``item_<0-a><1-b><2-c>`` of the paper).
"""

from __future__ import annotations

import torch
from torch import nn

PAD, EOS, PROMPT_START = 0, 1, 2


class TokenRecModel(nn.Module):
    """``forward(history_codes)`` -> a predicted item vector ``[b, item_dim]`` (unnormalised).

    ``history_codes`` int64 ``[b, L, K]``: the MQ-VAE codes of each history item, rows left-padded with -1.
    """

    def __init__(
        self,
        codebook_sizes: list[int],
        item_dim: int,
        d_model: int,
        d_kv: int,
        d_ff: int,
        heads: int,
        encoder_layers: int,
        decoder_layers: int,
        dropout: float,
        prompt_length: int,
        head_hidden: int,
        head_dropout: float,
    ):
        super().__init__()
        from transformers import T5Config, T5Model

        self.prompt_length = prompt_length
        offsets, start = [], PROMPT_START + prompt_length
        for size in codebook_sizes:
            offsets.append(start)
            start += size
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.register_buffer("prompt", torch.arange(PROMPT_START, PROMPT_START + prompt_length), persistent=False)
        config = T5Config(
            vocab_size=start,
            d_model=d_model,
            d_kv=d_kv,
            d_ff=d_ff,
            num_heads=heads,
            num_layers=encoder_layers,
            num_decoder_layers=decoder_layers,
            dropout_rate=dropout,
            feed_forward_proj="relu",
            pad_token_id=PAD,
            eos_token_id=EOS,
            decoder_start_token_id=PAD,
        )
        self.t5 = T5Model(config)
        # the paper's head: Linear(prompt_length * d_model, 256) - ReLU - Dropout(0.2) - Linear(256, item_dim)
        self.head = nn.Sequential(
            nn.Linear(prompt_length * d_model, head_hidden),
            nn.ReLU(),
            nn.Dropout(head_dropout),
            nn.Linear(head_hidden, item_dim),
        )

    def encoder_tokens(self, history_codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Item codes -> token ids ``[b, L * K + 1]`` (padding 0, the end token last) and the attention mask."""
        b, length, k = history_codes.shape
        valid = (history_codes >= 0).all(-1, keepdim=True).expand(-1, -1, k)
        tokens = torch.where(valid, history_codes + self.offsets, torch.full_like(history_codes, PAD))
        tokens = torch.cat(
            [tokens.reshape(b, length * k), torch.full((b, 1), EOS, dtype=torch.long, device=tokens.device)], dim=1
        )
        return tokens, tokens != PAD

    def forward(self, history_codes: torch.Tensor) -> torch.Tensor:
        tokens, mask = self.encoder_tokens(history_codes)
        prompt = self.prompt.unsqueeze(0).expand(tokens.shape[0], -1)
        states = self.t5(input_ids=tokens, attention_mask=mask.long(), decoder_input_ids=prompt).last_hidden_state
        return self.head(states.reshape(states.shape[0], -1))


def cosine_embedding_loss(
    predicted: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float
) -> torch.Tensor:
    """Summed ``torch.nn.CosineEmbeddingLoss`` terms: ``1 - cos(p, pos)`` (label +1) plus
    ``max(0, cos(p, neg) - margin)`` (label -1), per sample ``[b]``."""
    pos = nn.functional.cosine_similarity(predicted, positive, dim=-1)
    neg = nn.functional.cosine_similarity(predicted, negative, dim=-1)
    return (1 - pos) + (neg - margin).clamp(min=0)
