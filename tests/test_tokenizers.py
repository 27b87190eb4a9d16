"""Discrete tokenizers (VQ-VAE, RQ-VAE, MQ-VAE): shapes, determinism, de-duplication, health figures, STE."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from genrec_bench_plugins.mqvae import MQVAETokenizer
from genrec_bench_plugins.rqvae import RQVAE, RQVAETokenizer
from genrec_bench_plugins.vqvae import VQVAETokenizer

from genrec_bench.context import RunContext
from genrec_bench.data import SequenceDataset, SplitData
from genrec_bench.errors import ConfigError, DataError
from genrec_bench.plugins import registry
from genrec_bench.quantize import Codebook, code_health, group_ranks, kmeans, usage_and_perplexity

N_ITEMS, DIM = 240, 12
SMALL = {"codebook_size": 8, "epochs": 4, "batch_size": 64, "kmeans_iters": 5}
ARCH = {
    "rqvae": {"hidden": [32], "latent_dim": 8, "levels": 3},
    "vqvae": {"hidden": [32], "code_dim": 8, "n_codebooks": 3},
    "mqvae": {"hidden": [32], "code_dim": 8, "n_codebooks": 3, "refresh_every": 2},
}


def toy_data(n_items: int = N_ITEMS) -> SplitData:
    sequences = [np.arange(u, u + 5) % n_items for u in range(n_items)]
    dataset = SequenceDataset(
        "toy",
        np.array([f"u{u}" for u in range(n_items)]),
        np.array([f"i{i}" for i in range(n_items)]),
        [f"item {i}" for i in range(n_items)],
        np.arange(0, 5 * n_items + 1, 5, dtype=np.int64),
        np.concatenate(sequences),
    )
    return SplitData(dataset)


def feature_file(tmp_path, x: torch.Tensor, name: str = "f.npy") -> dict:
    np.save(tmp_path / name, x.numpy())
    return {"name": "file", "path": str(tmp_path / name)}


def clustered(n: int = N_ITEMS, d: int = DIM, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, d, generator=g) * 3
    return centres[torch.arange(n) % 6] + torch.randn(n, d, generator=g)


def ctx_for(tmp_path, seed: int = 0) -> RunContext:
    return RunContext(torch.device("cpu"), seed, tmp_path / "cache", tmp_path, show_progress=False)


def make(name: str, features: dict, **params):
    return registry().get("tokenizers", name)(features=features, **{**SMALL, **ARCH[name], **params})


@pytest.mark.parametrize("name", ["rqvae", "vqvae", "mqvae"])
def test_shapes_and_interface(name, tmp_path):
    tok = make(name, feature_file(tmp_path, clustered()))
    tok.fit(toy_data(), ctx_for(tmp_path))
    length = 4 if name == "rqvae" else 3  # RQ-VAE appends the de-duplication code
    assert tok.kind == "discrete" and tok.codes.shape == (N_ITEMS, length) and tok.codes.dtype == torch.int64
    assert len(tok.codebook_sizes) == length and tok.codebook_sizes[:3] == [8, 8, 8]
    assert ((tok.codes >= 0) & (tok.codes < torch.tensor(tok.codebook_sizes))).all()
    items = torch.tensor([[3, 7, -1], [0, -1, -1]])
    codes = tok.encode(items)
    assert codes.shape == (2, 3, length) and torch.equal(codes[0, 0], tok.codes[3]) and (codes[0, 2] == -1).all()
    assert torch.equal(tok.encode(torch.arange(N_ITEMS)), tok.codes)
    health = tok.health()
    for key in ("recon_mse", "recon_rel", "usage_l0", "perplexity_l2", "collision_rate", "collision_rate_dedup"):
        assert key in health and math.isfinite(health[key])
    with pytest.raises(IndexError):
        tok.encode(torch.tensor([N_ITEMS]))


@pytest.mark.parametrize("name", ["rqvae", "mqvae"])
def test_codes_repeat_under_a_seed(name, tmp_path):
    features, data = feature_file(tmp_path, clustered()), toy_data()
    first, second = make(name, features), make(name, features)
    first.fit(data, ctx_for(tmp_path, seed=3))
    second.fit(data, ctx_for(tmp_path, seed=3))
    assert torch.equal(first.codes, second.codes) and first.health() == second.health()


def test_ids_unique_after_dedup(tmp_path):
    x = clustered()
    x[:40] = x[0]  # 40 items with identical features must share their semantic codes
    tok = make("rqvae", feature_file(tmp_path, x))
    tok.fit(toy_data(), ctx_for(tmp_path))
    health = tok.health()
    assert health["collision_rate"] > 0 and health["max_collision"] >= 40
    assert health["collision_rate_dedup"] == 0.0
    assert torch.unique(tok.codes, dim=0).shape[0] == N_ITEMS
    assert tok.codebook_sizes[-1] == int(health["max_collision"])
    assert torch.equal(tok.decode(tok.codes), torch.arange(N_ITEMS))
    assert tok.decode(torch.tensor([[0, 0, 0, 999]])).tolist() == [-1]


def test_health_figures_match_hand_computed_cases():
    codes = torch.tensor([[0, 1], [0, 1], [1, 1], [2, 0]])
    health = code_health(codes, [4, 2])
    assert health["usage_l0"] == 0.75 and health["usage_l1"] == 1.0 and health["min_usage"] == 0.75
    assert health["perplexity_l0"] == pytest.approx(2**1.5)  # p = (1/2, 1/4, 1/4)
    assert health["perplexity_l1"] == pytest.approx(math.exp(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75))))
    assert health["collision_rate"] == 0.25 and health["collided_items"] == 0.5 and health["max_collision"] == 2
    assert group_ranks(torch.tensor([[5, 1], [2, 2], [5, 1], [5, 1], [2, 2], [0, 0]])).tolist() == [0, 0, 1, 2, 1, 0]
    assert usage_and_perplexity(torch.zeros(10, dtype=torch.long), 256) == (1 / 256, 1.0)  # collapse at a glance


def test_collapsed_codebook_is_reported(tmp_path, caplog):
    x = torch.ones(N_ITEMS, DIM)  # nothing to tell the items apart
    tok = make("vqvae", feature_file(tmp_path, x), standardize=False)
    with caplog.at_level(logging.WARNING, logger="genrec_bench"):
        tok.fit(toy_data(), ctx_for(tmp_path))
    assert tok.health()["usage_l0"] == 1 / 8 and tok.health()["collision_rate"] == 1 - 1 / N_ITEMS
    assert "codebook 0 collapsed: 1 of 8 codes used" in caplog.text


def test_straight_through_gradient_reaches_encoder():
    torch.manual_seed(0)
    model = RQVAE(DIM, [16], 4, levels=2, codebook_size=8, beta=0.25, dropout=0.0)
    x = clustered(64)
    model.init_codebooks(x, 5, torch.Generator().manual_seed(0))
    x_hat, codes, _ = model(x)
    torch.nn.functional.mse_loss(x_hat, x).backward()  # reconstruction only: no commitment gradient
    assert codes.shape == (64, 2)
    assert model.encoder[0].weight.grad is not None and model.encoder[0].weight.grad.abs().sum() > 0
    assert all(cb.weight.grad is None or cb.weight.grad.abs().sum() == 0 for cb in model.codebooks)


def test_kmeans_and_dead_code_reseeding():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = centres.repeat(50, 1) + 0.1 * torch.randn(150, 2, generator=g)
    found = kmeans(x, 3, 20, g)
    assert torch.cdist(found, centres).min(0).values.max() < 0.2
    codebook = Codebook(4, 2)
    codebook.weight.data = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [99.0, 99.0]])
    codebook.train()
    codebook(x)
    assert codebook.usage[3] == 0 and codebook.reseed_dead(g) == 1
    assert torch.cdist(codebook.weight[3:].detach(), x).min() < 0.1 and codebook.usage.sum() == 0


def test_mqvae_refreshes_codebooks_periodically(tmp_path, monkeypatch):
    calls = []
    tok = make("mqvae", feature_file(tmp_path, clustered()), epochs=5, refresh_every=2)
    original = tok.build

    def build(input_dim):
        model = original(input_dim)
        init = model.init_codebooks
        monkeypatch.setattr(model, "init_codebooks", lambda *a: (calls.append(1), init(*a)))
        return model

    monkeypatch.setattr(tok, "build", build)
    tok.fit(toy_data(), ctx_for(tmp_path))
    assert len(calls) == 3  # initialisation, then after epochs 2 and 4


def test_bad_input_gives_one_line_errors(tmp_path):
    data, ctx = toy_data(), ctx_for(tmp_path)
    with pytest.raises(ConfigError, match=r"'rqvae'.input_dim: 16, but features .* are 12-d; set input_dim: 12"):
        make("rqvae", feature_file(tmp_path, clustered()), input_dim=16).fit(data, ctx)
    x = clustered()
    x[5, 0] = float("inf")
    with pytest.raises(DataError, match="1 of 240 items have NaN or infinite features"):
        make("vqvae", feature_file(tmp_path, x, "bad.npy")).fit(data, ctx)
    with pytest.raises(ConfigError, match="codebook_size: 256 codes but only 240 items.*<= 240"):
        make("mqvae", feature_file(tmp_path, clustered()), codebook_size=256).fit(data, ctx)
    with pytest.raises(ConfigError, match="'rqvae'.levels: expected a positive number"):
        RQVAETokenizer(levels=0)
    with pytest.raises(ConfigError, match="mask_ratio"):
        MQVAETokenizer(mask_ratio=1.5)
    with pytest.raises(RuntimeError, match="call fit"):
        VQVAETokenizer().encode(torch.tensor([0]))
