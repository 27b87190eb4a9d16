"""Shared fixtures: one torch thread, a private cache, and small data sets written by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GENREC_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))


def write_atomic(folder: Path, name: str, rows: list[tuple], items: dict[str, str] | None = None) -> Path:
    """RecBole atomic files: rows are (user, item, rating, timestamp)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += ["\t".join(map(str, row)) for row in rows]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    if items:
        text = ["item_id:token\tmovie_title:token_seq\tclass:token_seq"]
        text += [f"{i}\t{t}\tDrama" for i, t in items.items()]
        (folder / f"{name}.item").write_text("\n".join(text) + "\n")
    return folder


def synthetic_rows(n_users: int = 40, n_items: int = 30, length: int = 12, seed: int = 0) -> list[tuple]:
    """Users walk through items with a planted rule (next = current + 1 mod n) plus some noise."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for user in range(n_users):
        item = int(torch.randint(n_items, (1,), generator=g))
        for step in range(length):
            rows.append((f"u{user}", f"i{item}", 4.0, 1000 * user + step))
            noise = float(torch.rand(1, generator=g)) < 0.1
            item = int(torch.randint(n_items, (1,), generator=g)) if noise else (item + 1) % n_items
    return rows


@pytest.fixture
def tiny_atomic(tmp_path) -> Path:
    """A small synthetic data set in RecBole atomic format, with item text."""
    return write_atomic(tmp_path / "tiny", "tiny", synthetic_rows(), {f"i{i}": f"Item {i}" for i in range(30)})


def write_benchmark(path: Path, data_folder: Path, methods: str | None = None, extra: str = "") -> Path:
    methods = (
        methods
        or """
  popularity:
    tokenizer: atomic
    generator: popularity
    retriever: full_ranking
  sasrec:
    tokenizer: atomic
    generator: {name: sasrec, hidden: 16, layers: 1, epochs: 3, batch_size: 64}
    retriever: full_ranking
"""
    )
    path.write_text(f"""name: tiny
seeds: [0]
baseline: popularity
protocol: {{ks: [1, 5, 10], max_history: 8}}
datasets:
  tiny: {{loader: atomic, path: {data_folder}}}
methods:{methods}
{extra}""")
    return path
