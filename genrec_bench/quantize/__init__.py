"""Shared pieces of the discrete tokenizers (VQ-VAE, RQ-VAE, MQ-VAE): codebooks, k-means, health, de-dup."""

from .base import DiscreteTokenizer, QuantizedAutoencoder, check_positive
from .ops import (
    Codebook,
    code_health,
    collision_figures,
    group_ranks,
    kmeans,
    mlp,
    squared_distances,
    straight_through,
    usage_and_perplexity,
)

__all__ = [
    "DiscreteTokenizer",
    "QuantizedAutoencoder",
    "check_positive",
    "Codebook",
    "code_health",
    "collision_figures",
    "group_ranks",
    "kmeans",
    "mlp",
    "squared_distances",
    "straight_through",
    "usage_and_perplexity",
]
