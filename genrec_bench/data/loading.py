"""Load a named data set through its loader plugin, preprocess it, and cache the result by content."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import DataError
from .dataset import RawDataset, SequenceDataset
from .preprocess import Preprocessing, build_sequences

log = logging.getLogger("genrec_bench")

PREPROCESSING_KEYS = ("min_rating", "k_core", "dedup")


class DatasetLoader(Protocol):
    """What a ``register_datasets`` factory returns."""

    #: Defaults for min_rating / k_core / dedup; the YAML overrides them.
    default_preprocessing: Preprocessing

    def sources(self) -> list[Path]:
        """The files whose content identifies the data (hashed for the cache key)."""

    def load(self) -> RawDataset:
        """Read the interactions and item text."""


def _hash_files(paths: list[Path]) -> str:
    h = hashlib.blake2b(digest_size=12)
    for path in sorted(paths):
        h.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _save(dataset: SequenceDataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez_compressed(
            tmp,
            user_ids=dataset.user_ids.astype(str),
            item_ids=dataset.item_ids.astype(str),
            item_text=np.array(dataset.item_text, dtype=str),
            offsets=dataset.offsets,
            items=dataset.items,
            meta=np.array(
                json.dumps(
                    {"name": dataset.name, "fingerprint": dataset.fingerprint, "preprocessing": dataset.preprocessing}
                )
            ),
        )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load_cached(path: Path) -> SequenceDataset | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return SequenceDataset(
                meta["name"],
                z["user_ids"],
                z["item_ids"],
                list(z["item_text"]),
                z["offsets"],
                z["items"],
                meta["fingerprint"],
                meta["preprocessing"],
            )
    except Exception as exc:  # a corrupt cache entry is rebuilt, never trusted
        log.warning("ignoring unreadable cache file %s (%s); rebuilding it", path, exc)
        return None


def load_dataset(name: str, spec: dict[str, Any], cache_dir: Path | None, where: str = "") -> SequenceDataset:
    """Build (or read from cache) the sequences of data set ``name`` described by ``spec``.

    ``spec`` holds ``loader`` (default: ``name``), the loader's parameters, and preprocessing overrides.
    """
    from ..config import instantiate
    from ..plugins import registry

    spec = dict(spec)
    loader_name = spec.pop("loader", name)
    overrides = {key: spec.pop(key) for key in PREPROCESSING_KEYS if key in spec}
    factory = registry().get("datasets", loader_name, where=where)
    loader: DatasetLoader = instantiate(factory, spec, f"{where}" if where else f"dataset '{name}'")
    options = Preprocessing(**{**loader.default_preprocessing.__dict__, **overrides})
    sources = loader.sources()
    for source in sources:
        if not Path(source).is_file():
            raise DataError(f"{source}: data file not found for data set '{name}'; fix 'path' in {where or 'the YAML'}")
    key_text = json.dumps(
        {
            "loader": loader_name,
            "params": spec,
            "pre": options.as_dict(),
            "files": _hash_files([Path(s) for s in sources]),
            "format": 1,
        },
        sort_keys=True,
        default=str,
    )
    key = hashlib.blake2b(key_text.encode(), digest_size=10).hexdigest()
    cache_file = cache_dir / "datasets" / f"{name}-{key}.npz" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        cached = _load_cached(cache_file)
        if cached is not None:
            cached.name = name
            return cached
    dataset = build_sequences(loader.load(), name, options)
    if cache_file is not None:
        _save(dataset, cache_file)
    return dataset
