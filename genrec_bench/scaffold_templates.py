"""Text of the files ``genrec-bench new-plugin`` writes (``string.Template``: ``$name``, ``$package``, ...).

Placeholders: ``name`` (registered and entry-point name), ``package`` (import name), ``dist`` (distribution
name), ``cls`` (class name), ``kind`` (tokenizer/generator/retriever), ``kinds`` (registry kind),
``core_version`` (genrec-bench version the package was made with).
"""

from __future__ import annotations

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

SETUP_CFG = """\
[metadata]
name = $dist
version = 0.1.0
description = A genrec-bench $kind plugin: $name

[options]
packages = find:
python_requires = >=3.10
install_requires =
    genrec-bench>=$core_version

[options.packages.find]
exclude = tests

[options.entry_points]
genrec_bench =
    $name = $package.plugin
"""

INIT = '''\
"""$dist: a genrec-bench $kind plugin (registers \'$name\'; see plugin.py)."""
__version__ = "0.1.0"
'''

README = """\
# $dist

A genrec-bench $kind plugin, registered as `$name` through the `genrec_bench` entry point in `setup.cfg`.
Made with `genrec-bench new-plugin`; the contract it keeps is in genrec-bench's `docs/writing-plugins.md`.

```bash
pip install -e .                        # offline: pip install --no-build-isolation -e .
genrec-bench plugins                    # '$name' is listed
python -m pytest -q                     # contract tests in tests/
genrec-bench run benchmark.yaml         # $name against the popularity baseline on MovieLens-100K
genrec-bench leaderboard results/$name-quick
```
"""

_BENCH_HEAD = """\
name: $name-quick
seeds: [0]
baseline: popularity
protocol: {ks: [5, 10, 20], max_history: 20}
datasets:
  ml-100k: {}                       # or {loader: atomic, path: my/data}; see genrec-bench's README
methods:
  popularity: {tokenizer: atomic, generator: popularity, retriever: full_ranking}
"""

BENCHMARK = {
    "generator": _BENCH_HEAD
    + """\
  $name:
    tokenizer: atomic
    generator: {name: $name, window: 1}
    retriever: full_ranking
""",
    "tokenizer": _BENCH_HEAD
    + """\
  $name:                            # semantic ids from $name, decoded by TIGER with a trie-constrained beam
    tokenizer: {name: $name, levels: 3, codebook_size: 32}
    generator: {name: tiger, epochs: 5}
    retriever: {name: beam, beam_size: 20}
""",
    "retriever": _BENCH_HEAD
    + """\
  $name:
    tokenizer: atomic
    generator: {name: sasrec, hidden: 32, layers: 1, epochs: 5}
    retriever: {name: $name, popularity_weight: 0.1}
""",
}

_MODULE_HEAD = '''\
"""$name: $summary

Written by ``genrec-bench new-plugin``: replace the model, keep the contract (genrec-bench's
docs/writing-plugins.md). The constructor's keyword arguments and type hints are its YAML parameters.
"""
from __future__ import annotations
'''

MODULE = {
    "generator": _MODULE_HEAD
    + '''
import numpy as np
import scipy.sparse as sp
import torch

from genrec_bench import hookimpl
from genrec_bench.errors import ConfigError
from genrec_bench.interfaces import Generator


class $cls(Generator):
    """Item j scores how often it followed the user's last item within ``window`` steps in training,
    plus ``popularity_weight`` x its normalised training count (which orders everything else)."""

    def __init__(self, window: int = 1, popularity_weight: float = 1e-3) -> None:
        if window < 1:
            raise ConfigError(f"$name: window must be >= 1, got {window}")
        self.window, self.popularity_weight = window, popularity_weight
        self.counts: sp.csr_matrix | None = None
        self.popularity: torch.Tensor | None = None
        self.valid_score = float("nan")
        self.users = self.cold_users = 0

    def fit(self, data, tokenizer, validate, ctx) -> None:
        rows, cols = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
        for seq in data.train_sequences():
            for step in range(1, min(self.window, len(seq) - 1) + 1):
                rows.append(seq[:-step])
                cols.append(seq[step:])
        rows_, cols_ = np.concatenate(rows), np.concatenate(cols)
        n = data.n_items  # duplicate (i, j) pairs are summed into counts
        self.counts = sp.csr_matrix((np.ones(len(rows_), np.float32), (rows_, cols_)), shape=(n, n))
        popularity = torch.as_tensor(data.train_item_counts(), dtype=torch.float32)
        self.popularity = (self.popularity_weight * popularity / popularity.max().clamp(min=1)).to(ctx.device)
        self.valid_score = next(iter(validate().values()), float("nan"))  # nothing to tune: just report it

    def generate(self, batch, ctx) -> torch.Tensor:
        last = batch.items[:, -1].cpu().numpy()  # histories are left-padded: the last column is the newest item
        scores = np.zeros((len(batch), self.counts.shape[1]), np.float32)
        known = last >= 0
        scores[known] = self.counts[last[known]].toarray()
        self.users += len(batch)
        self.cold_users += int((scores.max(axis=1) == 0).sum())
        return torch.from_numpy(scores).to(ctx.device) + self.popularity

    def health(self) -> dict[str, float]:
        return {"item_pairs": float(self.counts.nnz if self.counts is not None else 0),
                "cold_user_rate": self.cold_users / max(1, self.users), "valid_score": self.valid_score}
''',
    "tokenizer": _MODULE_HEAD
    + '''
import hashlib

import numpy as np
import torch

from genrec_bench import hookimpl
from genrec_bench.errors import ConfigError
from genrec_bench.interfaces import Tokenizer


class $cls(Tokenizer):
    """Semantic ids from a hash of each item's original id: ``levels`` codes of ``codebook_size`` each.

    With ``dedup`` a last code numbers the items that share a hash (as TIGER does), so every id is unique.
    """

    kind = "discrete"

    def __init__(self, levels: int = 3, codebook_size: int = 64, salt: str = "", dedup: bool = True) -> None:
        if levels < 1 or codebook_size < 2 or codebook_size ** levels >= 2 ** 62:
            raise ConfigError(f"$name: need levels >= 1, codebook_size >= 2 and codebook_size**levels < 2**62; "
                              f"got levels={levels}, codebook_size={codebook_size}")
        self.levels, self.codebook_size, self.salt, self.dedup = levels, codebook_size, salt, dedup
        self.codes: torch.Tensor | None = None
        self.figures: dict[str, float] = {}

    @property
    def codebook_sizes(self) -> list[int]:
        """Size of each code position (read by code-based generators and retrievers)."""
        extra = [int(self.codes[:, -1].max()) + 1] if self.dedup and self.codes is not None else []
        return [self.codebook_size] * self.levels + extra

    def fit(self, data, ctx) -> None:
        capacity = self.codebook_size ** self.levels
        keys = np.array([int.from_bytes(hashlib.blake2b(f"{self.salt}:{item}".encode(), digest_size=8).digest(),
                                        "little") % capacity for item in data.dataset.item_ids], dtype=np.int64)
        powers = self.codebook_size ** np.arange(self.levels - 1, -1, -1, dtype=np.int64)
        codes = (keys[:, None] // powers[None, :]) % self.codebook_size
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        self.figures = {"collision_rate": float((counts[inverse.ravel()] > 1).mean()) if len(keys) else 0.0,
                        "codebook_usage": float(np.mean([np.unique(c).size / self.codebook_size for c in codes.T]))}
        if self.dedup:  # position of each item among those with the same key
            order = np.argsort(keys, kind="stable")
            first = np.r_[True, keys[order][1:] != keys[order][:-1]]
            group_start = np.maximum.accumulate(np.where(first, np.arange(len(keys)), 0))
            rank = np.empty(len(keys), np.int64)
            rank[order] = np.arange(len(keys)) - group_start
            codes = np.concatenate([codes, rank[:, None]], axis=1)
        self.codes = torch.from_numpy(codes)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        return self.codes[items.cpu()].to(items.device)

    def health(self) -> dict[str, float]:
        return dict(self.figures)
''',
    "retriever": _MODULE_HEAD
    + '''
import torch

from genrec_bench import hookimpl
from genrec_bench.interfaces import Ranking, Retriever
from genrec_bench.ranking import topk_scores


class $cls(Retriever):
    """Top-k of a generator's ``[users, n_items]`` score matrix after adding ``popularity_weight`` x
    log(1 + training count); excluded items never appear."""

    def __init__(self, popularity_weight: float = 0.0) -> None:
        self.popularity_weight = popularity_weight
        self.prior: torch.Tensor | None = None
        self.slots = self.empty_slots = 0

    def fit(self, data, tokenizer, ctx) -> None:
        counts = torch.as_tensor(data.train_item_counts(), dtype=torch.float32)
        self.prior = (self.popularity_weight * torch.log1p(counts)).to(ctx.device)

    def rank(self, outputs: torch.Tensor, k: int, exclude: torch.Tensor | None) -> Ranking:
        n_items = self.prior.numel()
        if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2 or outputs.shape[1] != n_items:
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            raise TypeError(f"$name: expected a score matrix [users, {n_items}] from the generator, got {shape}")
        ranking = topk_scores(outputs.float() + self.prior, k, exclude)
        self.slots += ranking.items.numel()
        self.empty_slots += int((ranking.items < 0).sum())
        return ranking

    def health(self) -> dict[str, float]:
        return {"empty_slot_rate": self.empty_slots / max(1, self.slots)}
''',
}

REGISTER = """

@hookimpl
def register_$kinds(register):
    register("$name", $cls)
"""

SUMMARY = {
    "generator": "a genrec-bench generator scoring items by co-occurrence with the user's last item.",
    "tokenizer": "a genrec-bench tokenizer giving every item hashed semantic-id codes.",
    "retriever": "a genrec-bench retriever ranking score matrices over the whole catalogue.",
}

_TEST_HEAD = '''\
"""Contract tests for $name on a tiny synthetic data set (run: python -m pytest -q, after pip install -e .)."""
import numpy as np
import pytest
import torch

from genrec_bench import plugins
from genrec_bench.context import RunContext
from genrec_bench.data import SequenceDataset, SplitData

from $package.plugin import $cls


def tiny_split(n_users: int = 30, n_items: int = 20, length: int = 8) -> SplitData:
    """Users walk through items in order (next = current + 1 mod n_items) from random starts."""
    rng = np.random.default_rng(0)
    seqs = [(rng.integers(n_items) + np.arange(length)) % n_items for _ in range(n_users)]
    dataset = SequenceDataset("tiny", np.array([f"u{u}" for u in range(n_users)]),
                              np.array([f"i{i}" for i in range(n_items)]), [f"Item {i}" for i in range(n_items)],
                              np.arange(n_users + 1, dtype=np.int64) * length, np.concatenate(seqs).astype(np.int64))
    return SplitData(dataset, max_history=5)


@pytest.fixture
def ctx(tmp_path) -> RunContext:
    return RunContext(torch.device("cpu"), 0, tmp_path / "cache", tmp_path / "work", show_progress=False)


def test_registered_through_the_entry_point():
    plugins.reset()
    reg = plugins.registry()
    assert "$name" in reg.plugins, "entry point '$name' not found: pip install -e . first"
    assert reg.plugins["$name"].error is None and reg.get("$kinds", "$name") is $cls


def factory(kind: str, name: str):
    return plugins.registry().get(kind, name)
'''

TEST = {
    "generator": _TEST_HEAD
    + """

def test_scores_follow_the_planted_rule(ctx):
    data = tiny_split()
    tokenizer, retriever = factory("tokenizers", "atomic")(), factory("retrievers", "full_ranking")()
    generator = $cls()
    generator.fit(data, tokenizer, lambda: {"ndcg@10": 0.0}, ctx)
    batch = next(data.batches("test", 8))
    scores = generator.generate(batch, ctx)
    assert scores.shape == (8, data.n_items) and scores.dtype == torch.float32
    ranking = retriever.rank(scores, 5, batch.exclude)
    assert ranking.items.shape == (8, 5)
    assert torch.equal(ranking.items[:, 0], (batch.items[:, -1] + 1) % data.n_items)
    health = generator.health()
    assert health["item_pairs"] > 0 and all(isinstance(v, float) for v in health.values())
""",
    "tokenizer": _TEST_HEAD
    + """

def test_codes_are_unique_in_range_and_repeatable(ctx):
    data = tiny_split()
    first, second = $cls(levels=2, codebook_size=4), $cls(levels=2, codebook_size=4)
    first.fit(data, ctx)
    second.fit(data, ctx)
    codes = first.encode(torch.arange(data.n_items))
    assert codes.shape == (data.n_items, 3) and codes.dtype == torch.int64
    assert torch.equal(codes, second.encode(torch.arange(data.n_items)))
    assert (codes >= 0).all() and (codes < torch.tensor(first.codebook_sizes)).all()
    assert len({tuple(row) for row in codes.tolist()}) == data.n_items
    assert torch.equal(first.encode(torch.tensor([3, 1])), codes[[3, 1]])
    health = first.health()
    assert 0.0 < health["collision_rate"] <= 1.0 and 0.0 < health["codebook_usage"] <= 1.0
""",
    "retriever": _TEST_HEAD
    + """

def test_top_k_without_excluded_items(ctx):
    data = tiny_split()
    retriever = $cls()
    retriever.fit(data, factory("tokenizers", "atomic")(), ctx)
    scores = torch.rand(4, data.n_items, generator=torch.Generator().manual_seed(0))
    exclude = torch.tensor([[0, 1], [2, -1], [-1, -1], [5, 6]])
    ranking = retriever.rank(scores, 5, exclude)
    assert ranking.items.shape == ranking.scores.shape == (4, 5)
    assert (ranking.scores[:, :-1] >= ranking.scores[:, 1:]).all()
    for row, excluded in zip(ranking.items.tolist(), exclude.tolist()):
        assert not set(row) & set(excluded)
    with pytest.raises(TypeError, match="score matrix"):
        retriever.rank(torch.zeros(4, 3), 5, None)
    assert retriever.health()["empty_slot_rate"] == 0.0
""",
}
