"""VQ-VAE with K parallel codebooks: one shared MLP encoder whose latent is cut into K chunks, each chunk
quantised by its own codebook (one code per codebook), the quantised chunks concatenated and decoded."""

from __future__ import annotations

import torch
from torch import nn

from genrec_bench.quantize import (
    Codebook,
    DiscreteTokenizer,
    QuantizedAutoencoder,
    check_positive,
    mlp,
    straight_through,
)


class ParallelVQVAE(QuantizedAutoencoder):
    """``z = enc(x)`` split into ``n_codebooks`` chunks of ``code_dim``; chunk k -> nearest code of codebook k."""

    def __init__(
        self,
        input_dim: int,
        hidden: list[int],
        code_dim: int,
        n_codebooks: int,
        codebook_size: int,
        beta: float,
        dropout: float,
    ) -> None:
        super().__init__()
        self.n_codebooks, self.code_dim = n_codebooks, code_dim
        self.encoder = mlp([input_dim, *hidden, n_codebooks * code_dim], dropout)
        self.decoder = mlp([n_codebooks * code_dim, *reversed(hidden), input_dim], dropout)
        self.codebooks = nn.ModuleList(Codebook(codebook_size, code_dim, beta) for _ in range(n_codebooks))

    def chunks(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).view(x.shape[0], self.n_codebooks, self.code_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.chunks(x)
        parts = [codebook(z[:, k]) for k, codebook in enumerate(self.codebooks)]
        z_q = torch.stack([p[0] for p in parts], 1)
        loss = torch.stack([p[2] for p in parts]).sum()
        x_hat = self.decoder(straight_through(z, z_q).flatten(1))
        return x_hat, torch.stack([p[1] for p in parts], 1), loss

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, iters: int, generator: torch.Generator) -> None:
        z = self.chunks(x)
        for k, codebook in enumerate(self.codebooks):
            codebook.init_kmeans(z[:, k], iters, generator)


class VQVAETokenizer(DiscreteTokenizer):
    """K independent codes per item (product quantisation of one latent); no de-duplication code by default."""

    name = "vqvae"

    def __init__(
        self,
        features: str | dict = "text",
        hidden: list[int] | None = None,
        code_dim: int = 32,
        n_codebooks: int = 3,
        codebook_size: int = 256,
        beta: float = 0.25,
        dropout: float = 0.0,
        epochs: int = 200,
        batch_size: int = 1024,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        dedup: bool = False,
        reseed_dead: bool = True,
        kmeans_iters: int = 20,
        standardize: bool = True,
        input_dim: int | None = None,
    ) -> None:
        self.hidden = [512, 256] if hidden is None else list(hidden)
        check_positive(self.name, code_dim=code_dim, n_codebooks=n_codebooks, hidden=min(self.hidden, default=1))
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
        self.beta, self.dropout = beta, dropout

    def build(self, input_dim: int) -> ParallelVQVAE:
        return ParallelVQVAE(
            input_dim, self.hidden, self.code_dim, self.n_codebooks, self.codebook_size, self.beta, self.dropout
        )
