"""Item features (text embeddings, collaborative embeddings) through ``features`` plugins, cached by content.

A feature spec is a plugin name (``"text"``) or a mapping with ``name`` and the plugin's parameters
(``{"name": "lightgcn", "dim": 64}``). ``factory(**params)`` returns an extractor with
``compute(data, ctx) -> float tensor [n_items, d]`` and, optionally:

- ``version: str``: bump it when the computation changes, so that stale cache entries are not reused;
- ``seeded: bool``: True when the result depends on ``ctx.seed`` (trained embeddings);
- ``cacheable: bool``: False for extractors that only read a file (nothing to gain from a second copy).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .environment import isolated_rng
from .errors import ConfigError, DataError

if TYPE_CHECKING:
    from .context import RunContext
    from .data.split import SplitData

log = logging.getLogger("genrec_bench")

FORMAT = 2  # bump when the cache file layout, or what a computation depends on, changes (2: isolated RNG)


def parse_spec(spec: str | dict[str, Any], where: str = "features") -> tuple[str, dict[str, Any]]:
    """``"text"`` or ``{"name": "text", **params}`` -> ``("text", params)``."""
    if isinstance(spec, str) and spec:
        return spec, {}
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        params = dict(spec)
        return params.pop("name"), params
    raise ConfigError(
        f"{where}: expected a feature plugin name (e.g. 'text') or a mapping with 'name' and its "
        f"parameters, got {spec!r}"
    )


def data_fingerprint(data: SplitData) -> str:
    """The data set's content hash (computed here when the data set was built without one)."""
    if data.dataset.fingerprint:
        return data.dataset.fingerprint
    from .data.preprocess import fingerprint

    data.dataset.fingerprint = fingerprint(data.dataset)
    return data.dataset.fingerprint


def check_features(x: Any, n_items: int, what: str) -> torch.Tensor:
    """A float32 CPU tensor ``[n_items, d]`` with finite values, or a one-line DataError saying what is wrong."""
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{what}: compute() returned {type(x).__name__}, expected a float tensor [n_items, d]")
    if x.dim() != 2 or x.shape[0] != n_items or x.shape[1] == 0:
        raise DataError(
            f"{what}: expected a float tensor [{n_items}, d] (one row per item), got shape "
            f"{list(x.shape)}; the features must come from the same data set and preprocessing"
        )
    x = x.detach().to("cpu", torch.float32)
    bad = ~torch.isfinite(x).all(dim=1)
    if bad.any():
        rows = bad.nonzero().flatten()[:5].tolist()
        raise DataError(
            f"{what}: {int(bad.sum())} of {n_items} items have NaN or infinite features "
            f"(e.g. items {rows}); fix the extractor or its input (lower lr, check the embedding file)"
        )
    return x.contiguous()


def _cache_key(name: str, params: dict[str, Any], data: SplitData, extractor: Any, seed: int) -> str:
    text = json.dumps(
        {
            "name": name,
            "params": params,
            "data": data_fingerprint(data),
            "version": str(getattr(extractor, "version", "")),
            "n_items": data.n_items,
            "seed": seed if getattr(extractor, "seeded", False) else None,
            "format": FORMAT,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def _save_atomic(x: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.pt")
    os.close(fd)
    try:
        torch.save(x, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def item_features(
    spec: str | dict[str, Any], data: SplitData, ctx: RunContext, where: str = "features"
) -> torch.Tensor:
    """Features of every item, ``float32 [n_items, d]`` on the CPU, computed once per content and cached.

    The cache file is ``ctx.cache_dir/features/<name>-<hash>.pt``, keyed by the plugin name, its parameters,
    its version, the data set's fingerprint and (for trained features) the seed.
    """
    from .config import instantiate
    from .plugins import registry

    name, params = parse_spec(spec, where)
    factory = registry().get("features", name, where=where)
    extractor = instantiate(factory, params, f"{where} '{name}'")
    what = f"{where} '{name}'"
    path = None
    if getattr(extractor, "cacheable", True) and ctx.cache_dir is not None:
        key = _cache_key(name, params, data, extractor, ctx.seed)
        path = Path(ctx.cache_dir) / "features" / f"{name}-{key}.pt"
        if path.is_file():
            try:
                return check_features(torch.load(path, map_location="cpu", weights_only=True), data.n_items, what)
            except DataError:
                raise
            except Exception as exc:  # a corrupt entry is recomputed, never trusted
                log.warning("ignoring unreadable feature cache %s (%s); recomputing", path, exc)
    with isolated_rng(ctx.seed):  # the same features, and the same RNG state after, whether cached or not
        x = check_features(extractor.compute(data, ctx), data.n_items, what)
    if path is not None:
        _save_atomic(x, path)
        log.info("cached %s features %s at %s", name, list(x.shape), path)
    return x
