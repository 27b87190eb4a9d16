"""From raw interactions to chronological sequences: threshold, de-duplication, k-core, ordering."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .dataset import RawDataset, SequenceDataset

log = logging.getLogger("genrec_bench")

#: Leave-one-out needs a training item, a validation item and a test item.
MIN_SEQUENCE_LENGTH = 3


@dataclass(frozen=True)
class Preprocessing:
    """How raw interactions become sequences. ``None`` leaves a loader's own default in place."""

    min_rating: float | None = None  # keep interactions with rating >= min_rating (implicit feedback)
    k_core: int = 0  # iteratively keep users and items with at least k interactions
    dedup: bool = True  # keep only the first interaction of each (user, item) pair

    def as_dict(self) -> dict:
        return {"min_rating": self.min_rating, "k_core": self.k_core, "dedup": self.dedup}


def _ordered_unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique values and inverse indices, ordered numerically when every value is an integer string."""
    uniques, inverse = np.unique(values, return_inverse=True)
    if uniques.size and all(u.lstrip("-").isdigit() for u in uniques[: min(50, uniques.size)]):
        try:
            order = np.argsort(uniques.astype(np.int64), kind="stable")
        except ValueError:
            return uniques, inverse
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        return uniques[order], rank[inverse]
    return uniques, inverse


def _k_core(user_idx: np.ndarray, item_idx: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of interactions that survive the iterative k-core filter."""
    keep = np.ones(user_idx.size, dtype=bool)
    while True:
        user_counts = np.bincount(user_idx[keep], minlength=user_idx.max() + 1)
        item_counts = np.bincount(item_idx[keep], minlength=item_idx.max() + 1)
        new_keep = keep & (user_counts[user_idx] >= k) & (item_counts[item_idx] >= k)
        if new_keep.sum() == keep.sum():
            return new_keep
        keep = new_keep


def build_sequences(raw: RawDataset, name: str, options: Preprocessing) -> SequenceDataset:
    """Apply ``options`` and order each user's interactions by time (file order breaks ties)."""
    if len(raw) == 0:
        raise DataError(f"data set '{name}': no interactions were read; check that the files are not empty")
    users = raw.users.astype(str)
    items = raw.items.astype(str)
    timestamps = raw.timestamps.astype(np.float64)
    keep = np.ones(len(raw), dtype=bool)
    if options.min_rating is not None:
        if raw.ratings is None:
            raise DataError(f"data set '{name}': min_rating is set but the data has no ratings; remove min_rating")
        keep &= raw.ratings >= options.min_rating
    users, items, timestamps = users[keep], items[keep], timestamps[keep]
    position = np.arange(users.size)

    _, user_idx = np.unique(users, return_inverse=True)
    _, item_idx = np.unique(items, return_inverse=True)
    order = np.lexsort((position, timestamps, user_idx))  # by user, then time, then file order
    users, items, user_idx, item_idx = users[order], items[order], user_idx[order], item_idx[order]

    keep = np.ones(users.size, dtype=bool)
    if options.dedup and users.size:
        pair = user_idx.astype(np.int64) * (item_idx.max() + 1) + item_idx
        _, first = np.unique(pair, return_index=True)
        keep = np.zeros(users.size, dtype=bool)
        keep[first] = True
    if options.k_core > 1 and users.size:
        sub = _k_core(user_idx[keep], item_idx[keep], options.k_core)
        keep[np.flatnonzero(keep)[~sub]] = False
    users, items = users[keep], items[keep]

    user_ids, user_idx = _ordered_unique(users)
    lengths = np.bincount(user_idx, minlength=user_ids.size)
    short = lengths < MIN_SEQUENCE_LENGTH
    if short.any():
        log.warning(
            "data set '%s': dropped %d users with fewer than %d interactions (leave-one-out needs 3)",
            name,
            int(short.sum()),
            MIN_SEQUENCE_LENGTH,
        )
        keep = ~short[user_idx]
        users, items = users[keep], items[keep]
        user_ids, user_idx = _ordered_unique(users)
    if users.size == 0:
        raise DataError(
            f"data set '{name}': no user has {MIN_SEQUENCE_LENGTH}+ interactions after filtering "
            f"({options.as_dict()}); relax min_rating or k_core"
        )
    item_ids, item_idx = _ordered_unique(items)
    # user_idx is sorted by construction only if ordering is preserved; sort stably by user to build CSR.
    order = np.argsort(user_idx, kind="stable")
    counts = np.bincount(user_idx, minlength=user_ids.size)
    offsets = np.zeros(user_ids.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    item_text = [raw.item_text.get(i, "") for i in item_ids]
    dataset = SequenceDataset(
        name=name,
        user_ids=user_ids,
        item_ids=item_ids,
        item_text=item_text,
        offsets=offsets,
        items=item_idx[order].astype(np.int64),
        preprocessing=options.as_dict(),
    )
    dataset.fingerprint = fingerprint(dataset)
    return dataset


def fingerprint(dataset: SequenceDataset) -> str:
    """A content hash of the processed data: sequences, ids and item text."""
    h = hashlib.blake2b(digest_size=12)
    for array in (dataset.offsets, dataset.items):
        h.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    for strings in (dataset.user_ids, dataset.item_ids, dataset.item_text):
        h.update("\x1f".join(map(str, strings)).encode())
    return h.hexdigest()
