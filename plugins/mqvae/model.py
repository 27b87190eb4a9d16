"""MQ-VAE as in TokenRec (Qu et al. 2024): K parallel encoders, each fed the input with a random mask over its
own chunk of dimensions plus a learnable position vector; one codebook per encoder; the K codes are added and
decoded; the codebooks are re-initialised by k-means every ``refresh_every`` epochs."""

from __future__ import annotations

import torch
from torch import nn

from genrec_bench.errors import ConfigError
from genrec_bench.quantize import (
    Codebook,
    DiscreteTokenizer,
    QuantizedAutoencoder,
    check_positive,
    mlp,
    straight_through,
)


class MaskedMultiVQVAE(QuantizedAutoencoder):
    """``z_k = enc_k((1 - m_k) * x + p_k)``, ``m_k ~ Bernoulli(mask_ratio)`` on chunk k of the input (training
    only); ``x_hat = dec(sum_k e_k)``."""

    def __init__(
        self,
        input_dim: int,
        hidden: list[int],
        code_dim: int,
        n_codebooks: int,
        codebook_size: int,
        beta: float,
        dropout: float,
        mask_ratio: float,
    ) -> None:
        super().__init__()
        self.mask_ratio = mask_ratio
        self.encoders = nn.ModuleList(mlp([input_dim, *hidden, code_dim], dropout) for _ in range(n_codebooks))
        self.decoder = mlp([code_dim, *reversed(hidden), input_dim], dropout)
        self.position = nn.Parameter(torch.zeros(n_codebooks, input_dim))
        self.codebooks = nn.ModuleList(Codebook(codebook_size, code_dim, beta) for _ in range(n_codebooks))
        chunk = torch.arange(input_dim) * n_codebooks // input_dim  # which encoder masks each input dimension
        self.register_buffer("region", chunk.unsqueeze(0) == torch.arange(n_codebooks).unsqueeze(1), persistent=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, K, code_dim]``; masks are drawn in training mode only."""
        xk = x.unsqueeze(1).expand(-1, len(self.encoders), -1)
        if self.training and self.mask_ratio > 0:
            drop = (torch.rand(xk.shape, device=x.device) < self.mask_ratio) & self.region
            xk = xk.masked_fill(drop, 0.0)
        xk = xk + self.position
        return torch.stack([enc(xk[:, k]) for k, enc in enumerate(self.encoders)], 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        parts = [codebook(z[:, k]) for k, codebook in enumerate(self.codebooks)]
        z_q = torch.stack([p[0] for p in parts], 1)
        loss = torch.stack([p[2] for p in parts]).sum()
        x_hat = self.decoder(straight_through(z, z_q).sum(1))
        return x_hat, torch.stack([p[1] for p in parts], 1), loss

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, iters: int, generator: torch.Generator) -> None:
        z = self.encode(x)
        for k, codebook in enumerate(self.codebooks):
            codebook.init_kmeans(z[:, k], iters, generator)


class MQVAETokenizer(DiscreteTokenizer):
    """TokenRec's MQ-tokenizer: K masked encoders, additive codes, periodic k-means refresh.

    Defaults follow TokenRec: 3 codebooks x 256 codes of 512-d, mask ratio 0.2, refresh every 50 epochs,
    encoder ``input -> 128 -> 256 -> 512``. TokenRec disables the commitment term (``beta: 0``); 0.25 is kept here.
    """

    name = "mqvae"

    def __init__(
        self,
        features: str | dict = "text",
        hidden: list[int] | None = None,
        code_dim: int = 512,
        n_codebooks: int = 3,
        codebook_size: int = 256,
        mask_ratio: float = 0.2,
        refresh_every: int = 50,
        beta: float = 0.25,
        dropout: float = 0.0,
        epochs: int = 200,
        batch_size: int = 512,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        dedup: bool = False,
        reseed_dead: bool = True,
        kmeans_iters: int = 20,
        standardize: bool = True,
        input_dim: int | None = None,
    ) -> None:
        self.hidden = [128, 256] if hidden is None else list(hidden)
        check_positive(self.name, code_dim=code_dim, n_codebooks=n_codebooks, hidden=min(self.hidden, default=1))
        if not 0 <= mask_ratio < 1 or refresh_every < 0:
            raise ConfigError(
                f"tokenizer 'mqvae': mask_ratio must lie in [0, 1) and refresh_every >= 0 "
                f"(0: never), got {mask_ratio} and {refresh_every}"
            )
        super().__init__(
            features,
            [codebook_size] * n_codebooks,
            epochs,
            batch_size,
            lr,
            weight_decay,
            dedup,
            reseed_dead,
            kmeans_iters,
            standardize,
            input_dim,
        )
        self.code_dim, self.n_codebooks, self.codebook_size = code_dim, n_codebooks, codebook_size
        self.mask_ratio, self.refresh_every, self.beta, self.dropout = mask_ratio, refresh_every, beta, dropout

    def build(self, input_dim: int) -> MaskedMultiVQVAE:
        return MaskedMultiVQVAE(
            input_dim,
            self.hidden,
            self.code_dim,
            self.n_codebooks,
            self.codebook_size,
            self.beta,
            self.dropout,
            self.mask_ratio,
        )
