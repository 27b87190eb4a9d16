"""RQ-VAE as in TIGER (Rajput et al. 2023): MLP encoder to a small latent, residual quantisation over several
codebooks, straight-through estimator, k-means initialisation, and a last code that makes ids unique."""

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


class RQVAE(QuantizedAutoencoder):
    """``z = enc(x)``; level d quantises the residual ``r_d`` (``r_0 = z``, ``r_{d+1} = r_d - e_d``);
    ``x_hat = dec(sum_d e_d)``. Loss per level: ``||sg[r_d] - e_d||^2 + beta ||r_d - sg[e_d]||^2``."""

    def __init__(
        self,
        input_dim: int,
        hidden: list[int],
        latent_dim: int,
        levels: int,
        codebook_size: int,
        beta: float,
        dropout: float,
    ) -> None:
        super().__init__()
        self.encoder = mlp([input_dim, *hidden, latent_dim], dropout)
        self.decoder = mlp([latent_dim, *reversed(hidden), input_dim], dropout)
        self.codebooks = nn.ModuleList(Codebook(codebook_size, latent_dim, beta) for _ in range(levels))

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        residual, total, loss, codes = z, torch.zeros_like(z), z.new_zeros(()), []
        for codebook in self.codebooks:
            e, idx, level_loss = codebook(residual)
            residual = residual - e.detach()
            total = total + e
            loss = loss + level_loss
            codes.append(idx)
        return total, torch.stack(codes, 1), loss

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        z_q, codes, loss = self.quantize(z)
        return self.decoder(straight_through(z, z_q)), codes, loss

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, iters: int, generator: torch.Generator) -> None:
        residual = self.encoder(x)
        for codebook in self.codebooks:
            codebook.init_kmeans(residual, iters, generator)
            residual = residual - codebook.weight[codebook.lookup(residual)]


class RQVAETokenizer(DiscreteTokenizer):
    """TIGER's semantic ids: ``levels`` residual codes per item, plus a de-duplication code when ``dedup``.

    Defaults follow TIGER: encoder ``input -> 512 -> 256 -> 128 -> 32``, 3 levels x 256 codes, beta 0.25,
    k-means initialisation on the first batch (1024 items). TIGER trains with Adagrad lr 0.4 for 20k epochs;
    the defaults here are AdamW 1e-3 for 200 epochs on standardised features (on Beauty with MiniLM text
    features every code of every level is in use after 20 epochs).
    """

    name = "rqvae"

    def __init__(
        self,
        features: str | dict = "text",
        hidden: list[int] | None = None,
        latent_dim: int = 32,
        levels: int = 3,
        codebook_size: int = 256,
        beta: float = 0.25,
        dropout: float = 0.0,
        epochs: int = 200,
        batch_size: int = 1024,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        dedup: bool = True,
        reseed_dead: bool = True,
        kmeans_iters: int = 20,
        standardize: bool = True,
        input_dim: int | None = None,
    ) -> None:
        self.hidden = [512, 256, 128] if hidden is None else list(hidden)
        check_positive(self.name, latent_dim=latent_dim, levels=levels, hidden=min(self.hidden, default=1))
        super().__init__(
            features,
            [codebook_size] * levels,
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
        self.latent_dim, self.levels, self.codebook_size = latent_dim, levels, codebook_size
        self.beta, self.dropout = beta, dropout

    def build(self, input_dim: int) -> RQVAE:
        return RQVAE(input_dim, self.hidden, self.latent_dim, self.levels, self.codebook_size, self.beta, self.dropout)
