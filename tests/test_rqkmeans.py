"""Residual k-means tokenizer: registration, shapes, seeded repeatability, residual structure, shared health."""

from __future__ import annotations

import pytest
import torch
from genrec_bench_plugins.rqkmeans import RQKMeansTokenizer
from genrec_bench_plugins.rqvae import RQVAETokenizer
from test_tokenizers import N_ITEMS, clustered, ctx_for, feature_file, toy_data

from genrec_bench.errors import ConfigError
from genrec_bench.plugins import registry
from genrec_bench.quantize import squared_distances


def make(tmp_path, x=None, **params) -> RQKMeansTokenizer:
    x = clustered() if x is None else x
    return registry().get("tokenizers", "rqkmeans")(
        features=feature_file(tmp_path, x), **{"codebook_size": 8, "levels": 3, "kmeans_iters": 10, **params}
    )


def test_registered_with_the_shared_interface_and_health_figures(tmp_path):
    tok = make(tmp_path)
    tok.fit(toy_data(), ctx_for(tmp_path))
    assert tok.kind == "discrete" and tok.codes.shape == (N_ITEMS, 4) and tok.codes.dtype == torch.int64
    assert tok.codebook_sizes[:3] == [8, 8, 8] and tok.codebook_sizes[3] == int(tok.codes[:, 3].max()) + 1
    assert torch.unique(tok.codes, dim=0).shape[0] == N_ITEMS  # de-duplicated
    items = torch.tensor([[3, -1], [0, 7]])
    assert torch.equal(tok.decode(tok.encode(items)), items)
    rq = RQVAETokenizer(
        features=feature_file(tmp_path, clustered(), "g.npy"),
        hidden=[16],
        latent_dim=4,
        levels=3,
        codebook_size=8,
        epochs=1,
        batch_size=64,
        kmeans_iters=2,
    )
    rq.fit(toy_data(), ctx_for(tmp_path))
    assert set(tok.health()) == set(rq.health())  # the same figures as rqvae
    assert tok.health()["collision_rate_dedup"] == 0.0 and tok.health()["reseeded_codes"] == 0.0


def test_codes_repeat_under_a_seed_and_change_with_it(tmp_path):
    codes = []
    for seed in (0, 0, 1):
        tok = make(tmp_path)
        tok.fit(toy_data(), ctx_for(tmp_path, seed))
        codes.append(tok.codes)
    assert torch.equal(codes[0], codes[1])
    assert not torch.equal(codes[0], codes[2])


def test_levels_quantise_residuals_and_reconstruction_improves_with_depth(tmp_path):
    x = clustered(d=6)
    errors = []
    for levels in (1, 2, 3):
        tok = make(tmp_path, x, levels=levels, codebook_size=6, standardize=False, dedup=False)
        tok.fit(toy_data(), ctx_for(tmp_path))
        errors.append(tok.health()["recon_mse"])
    assert errors[0] > errors[1] > errors[2]
    # each code is the nearest centre of the residual the earlier levels leave
    books = [cb.weight.detach() for cb in tok.model.codebooks]
    residual = x
    for level, book in enumerate(books):
        assert torch.equal(squared_distances(residual, book).argmin(1), tok.codes[:, level])
        residual = residual - book[tok.codes[:, level]]
    # six well-separated clusters, six codes: the first level recovers them
    g = torch.Generator().manual_seed(1)
    separated = torch.eye(6) * 20 + torch.randn(6, 6, generator=g)
    x = separated[torch.arange(N_ITEMS) % 6] + 0.1 * torch.randn(N_ITEMS, 6, generator=g)
    tok = make(tmp_path, x, levels=1, codebook_size=6, standardize=False)
    tok.fit(toy_data(), ctx_for(tmp_path))
    first = tok.codes[:, 0]
    assert all(len(set(first[torch.arange(N_ITEMS) % 6 == c].tolist())) == 1 for c in range(6))


def test_sample_fits_centres_on_a_subset_and_assigns_all(tmp_path):
    tok = make(tmp_path, sample=64)
    tok.fit(toy_data(), ctx_for(tmp_path))
    assert tok.codes.shape == (N_ITEMS, 4) and torch.unique(tok.codes, dim=0).shape[0] == N_ITEMS


def test_bad_parameters_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="levels"):
        RQKMeansTokenizer(levels=0)
    with pytest.raises(ConfigError, match="codebook_size"):
        make(tmp_path, codebook_size=10_000).fit(toy_data(), ctx_for(tmp_path))


def test_reassigning_collisions_gives_unique_ids_without_the_extra_code(tmp_path):
    x = clustered()
    plain = make(tmp_path, x, dedup=False, codebook_size=4, levels=2)
    plain.fit(toy_data(), ctx_for(tmp_path))
    assert plain.health()["collision_rate"] > 0  # 240 items, 16 ids: collisions are certain
    with pytest.raises(ConfigError, match="share one prefix"):
        make(tmp_path, x, dedup=False, reassign_collisions=True, codebook_size=4, levels=2).fit(
            toy_data(), ctx_for(tmp_path)
        )
    tok = make(tmp_path, x, dedup=False, reassign_collisions=True, codebook_size=16, levels=3)
    tok.fit(toy_data(), ctx_for(tmp_path))
    health = tok.health()
    assert tok.codes.shape == (N_ITEMS, 3) and torch.unique(tok.codes, dim=0).shape[0] == N_ITEMS
    assert health["collision_rate"] > 0 and health["collision_rate_dedup"] == 0.0 and health["reassigned_items"] > 0
    before = make(tmp_path, x, dedup=False, codebook_size=16, levels=3)
    before.fit(toy_data(), ctx_for(tmp_path))
    kept = (before.codes[:, :2] == tok.codes[:, :2]).all(1)
    assert kept.all()  # only the last level moves
    with pytest.raises(ConfigError, match="dedup: false"):
        RQKMeansTokenizer(reassign_collisions=True)
