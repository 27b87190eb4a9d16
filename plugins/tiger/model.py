"""TIGER's encoder-decoder: a T5 built from a config (trained from scratch) over semantic-id tokens.

Token layout: 0 = padding (and decoder start), 1 = end, then the codes of each position in its own range,
then the hashed user tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch


@lru_cache(maxsize=64)
def _offsets_on(offsets: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The code offsets as a tensor on ``device``, made once (no host-to-device copy per training step)."""
    return torch.tensor(offsets, dtype=torch.long, device=device)


@dataclass(frozen=True)
class TokenLayout:
    codebook_sizes: tuple[int, ...]
    n_user_tokens: int

    @property
    def offsets(self) -> list[int]:
        out, start = [], 2
        for size in self.codebook_sizes:
            out.append(start)
            start += size
        return out

    @property
    def user_offset(self) -> int:
        return 2 + sum(self.codebook_sizes)

    @property
    def vocab_size(self) -> int:
        return self.user_offset + max(1, self.n_user_tokens)

    def code_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes of the first ``t`` positions ``[..., t]`` -> vocabulary tokens ``[..., t]``."""
        return codes + _offsets_on(tuple(self.offsets[: codes.shape[-1]]), codes.device)

    def user_tokens(self, users: torch.Tensor) -> torch.Tensor:
        """The hashing trick: user ids fold into ``n_user_tokens`` buckets."""
        return self.user_offset + users % max(1, self.n_user_tokens)


def build_t5(
    layout: TokenLayout,
    d_model: int,
    d_kv: int,
    d_ff: int,
    heads: int,
    encoder_layers: int,
    decoder_layers: int,
    dropout: float,
):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=layout.vocab_size,
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_heads=heads,
        num_layers=encoder_layers,
        num_decoder_layers=decoder_layers,
        dropout_rate=dropout,
        feed_forward_proj="relu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        tie_word_embeddings=True,
    )
    return T5ForConditionalGeneration(config)


def encoder_inputs(
    layout: TokenLayout, codes: torch.Tensor, histories: torch.Tensor, users: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[user token] + flattened history codes`` and its attention mask, left-padded.

    With ``n_user_tokens == 0`` there is no user token (the input is the history alone).
    """
    valid = histories >= 0
    tokens = layout.code_tokens(codes[histories.clamp(min=0)]) * valid.unsqueeze(-1)  # [B, H, L]
    input_ids = tokens.flatten(1)
    if layout.n_user_tokens > 0:
        input_ids = torch.cat([layout.user_tokens(users).unsqueeze(1), input_ids], dim=1)
    return input_ids, input_ids != 0


class T5CodeDecoder:
    """Next-code log-probabilities from a T5 decoder over precomputed encoder states (see CodeDecoder)."""

    def __init__(self, model, layout: TokenLayout, states: torch.Tensor, mask: torch.Tensor, autocast_dtype):
        self.model, self.layout, self.states, self.mask = model, layout, states, mask
        self.autocast_dtype = autocast_dtype

    def __len__(self) -> int:
        return self.states.shape[0]

    def select(self, rows: slice) -> T5CodeDecoder:
        return T5CodeDecoder(self.model, self.layout, self.states[rows], self.mask[rows], self.autocast_dtype)

    def log_probs(self, prefix: torch.Tensor) -> torch.Tensor:
        b, width, t = prefix.shape
        start = torch.zeros((b * width, 1), dtype=torch.long, device=prefix.device)
        decoder_ids = torch.cat(
            [start, self.layout.code_tokens(prefix.view(b * width, t)) if t else start[:, :0]], dim=1
        )
        states = self.states.unsqueeze(1).expand(-1, width, -1, -1).reshape(b * width, *self.states.shape[1:])
        mask = self.mask.unsqueeze(1).expand(-1, width, -1).reshape(b * width, -1)
        device_type = prefix.device.type
        with torch.autocast(device_type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            out = self.model(
                encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=decoder_ids, use_cache=False
            )
        logits = out.logits[:, -1].float().log_softmax(-1)
        lo = self.layout.offsets[t]
        return logits[:, lo : lo + self.layout.codebook_sizes[t]].view(b, width, -1)
