"""Precomputed item features read from a file (``.npy``, or a tensor / state dict saved with torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genrec_bench.context import RunContext
from genrec_bench.data import SplitData
from genrec_bench.errors import ConfigError, DataError


class FileFeatures:
    """Rows ``0..n_items-1`` are the items' internal ids. ``key`` picks a tensor from a saved dict
    (e.g. ``embedding_item.weight`` of a LightGCN checkpoint); without it, the one 2-D tensor with n_items rows.
    ``{dataset}`` in ``path`` is replaced by the data set's name, so one method can sweep several data sets."""

    cacheable = False  # the file is the cache

    def __init__(self, path: str, key: str | None = None) -> None:
        self.template, self.key = path, key
        self.path = Path(path).expanduser()

    def _pick(self, obj: object, n_items: int) -> object:
        if not isinstance(obj, dict):
            return obj
        if self.key is not None:
            if self.key not in obj:
                raise ConfigError(
                    f"features 'file'.key: '{self.key}' not in {self.path}; keys: {', '.join(map(str, list(obj)[:10]))}"
                )
            return obj[self.key]
        found = [k for k, v in obj.items() if isinstance(v, torch.Tensor) and v.dim() == 2 and len(v) == n_items]
        if len(found) != 1:
            raise ConfigError(
                f"features 'file': {self.path} holds a dict; set 'key' to the item tensor "
                f"(candidates: {', '.join(map(str, found)) or 'none with ' + str(n_items) + ' rows'})"
            )
        return obj[found[0]]

    def compute(self, data: SplitData, ctx: RunContext) -> torch.Tensor:
        self.path = Path(self.template.replace("{dataset}", data.dataset.name)).expanduser()
        if not self.path.is_file():
            raise DataError(f"features 'file'.path: {self.path} not found; give the path of a .npy or .pt file")
        if self.path.suffix == ".npy":
            obj: object = torch.from_numpy(np.load(self.path, allow_pickle=False))
        else:
            try:
                obj = torch.load(self.path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise DataError(
                    f"features 'file'.path: cannot read {self.path} "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0]}); save a tensor or .npy"
                ) from None
        obj = self._pick(obj, data.n_items)
        if not isinstance(obj, torch.Tensor):
            raise DataError(f"features 'file': {self.path} holds {type(obj).__name__}, expected a tensor [n_items, d]")
        return obj.float()
