"""Data containers: what a loader returns (RawDataset) and what the harness evaluates on (SequenceDataset)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class RawDataset:
    """Interactions as a loader read them, one row each, before any filtering.

    ``order`` breaks timestamp ties (file order); loaders of pre-split layouts put the sequence position there.
    ``item_text`` maps an original item id to its text (title, genres or categories).
    """

    users: np.ndarray  # str [n]
    items: np.ndarray  # str [n]
    timestamps: np.ndarray  # float64 [n]
    ratings: np.ndarray | None = None  # float64 [n]
    item_text: dict[str, str] = field(default_factory=dict)
    source_files: list[Path] = field(default_factory=list)
    #: True for layouts the authors already filtered and ordered (no default filtering applies).
    preprocessed: bool = False

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class SequenceDataset:
    """Chronological item sequences per user, in CSR form, with item text.

    ``items[offsets[u]:offsets[u+1]]`` is user ``u``'s sequence of internal item ids ``0..n_items-1``.
    """

    name: str
    user_ids: np.ndarray  # str [n_users], original ids
    item_ids: np.ndarray  # str [n_items], original ids
    item_text: list[str]
    offsets: np.ndarray  # int64 [n_users + 1]
    items: np.ndarray  # int64 [n_interactions]
    fingerprint: str = ""
    preprocessing: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(self.offsets[-1])

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def statistics(self) -> dict[str, float]:
        """Users, items, interactions, density and sequence lengths, as papers report them."""
        lengths = self.lengths()
        n_items_used = int(np.unique(self.items).size) if self.n_interactions else 0
        return {
            "users": self.n_users,
            "items": self.n_items,
            "items_in_sequences": n_items_used,
            "interactions": self.n_interactions,
            "density": self.n_interactions / max(1, self.n_users * self.n_items),
            "mean_length": float(lengths.mean()) if len(lengths) else 0.0,
            "median_length": float(np.median(lengths)) if len(lengths) else 0.0,
            "min_length": int(lengths.min()) if len(lengths) else 0,
            "max_length": int(lengths.max()) if len(lengths) else 0,
        }
