"""Leave-one-out split and batching: last item is the test target, second-last the validation target."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .dataset import SequenceDataset

PAD = -1
STAGES = ("valid", "test")


@dataclass
class UserBatch:
    """A batch of users with their capped histories (left-padded with -1, most recent item last)."""

    users: torch.Tensor  # int64 [b]
    items: torch.Tensor  # int64 [b, L]
    targets: torch.Tensor  # int64 [b]
    exclude: torch.Tensor | None  # int64 [b, M], the whole history, -1 padded; None when nothing is excluded

    @property
    def mask(self) -> torch.Tensor:
        return self.items != PAD

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=1)

    def __len__(self) -> int:
        return int(self.users.numel())


def _gather_left_padded(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """Rows ``items[start:end]`` (the last ``width`` of them), right-aligned in a -1 padded matrix."""
    idx = ends[:, None] - width + np.arange(width)[None, :]
    valid = idx >= np.maximum(starts, ends - width)[:, None]
    out = np.full(idx.shape, PAD, dtype=np.int64)
    out[valid] = items[idx[valid]]
    return out


class SplitData:
    """The leave-one-out view of a SequenceDataset that plugins train and are evaluated on."""

    def __init__(self, dataset: SequenceDataset, max_history: int = 20, exclude_history: bool = True):
        self.dataset = dataset
        self.max_history = int(max_history)
        self.exclude_history = exclude_history
        self._starts = dataset.offsets[:-1]
        self._ends = dataset.offsets[1:]

    @property
    def n_items(self) -> int:
        return self.dataset.n_items

    @property
    def n_users(self) -> int:
        return self.dataset.n_users

    @property
    def item_text(self) -> list[str]:
        return self.dataset.item_text

    def targets(self, stage: str) -> np.ndarray:
        """The held-out item of every user for ``stage`` ("valid" or "test")."""
        return self.dataset.items[self._ends - (2 if stage == "valid" else 1)]

    def train_sequences(self) -> list[np.ndarray]:
        """Each user's training sequence (everything before the validation item)."""
        items = self.dataset.items
        return [items[s : e - 2] for s, e in zip(self._starts, self._ends, strict=True)]

    def train_lengths(self) -> np.ndarray:
        return (self._ends - 2) - self._starts

    def train_item_counts(self) -> np.ndarray:
        """How often each item occurs in the training sequences (no validation or test items)."""
        mask = np.ones(self.dataset.n_interactions, dtype=bool)
        mask[self._ends - 1] = False
        mask[self._ends - 2] = False
        return np.bincount(self.dataset.items[mask], minlength=self.n_items)

    def train_windows(self, length: int) -> torch.Tensor:
        """Training sequences cut from the end into windows of ``length`` items (left-padded, -1).

        Windows overlap by one item, so every training item appears once as a next-item target.
        """
        starts, ends = self._starts, self._ends - 2
        rows_start, rows_end = [], []
        step = length - 1
        while True:
            alive = ends - starts >= 2
            if not alive.any():
                break
            rows_end.append(ends[alive])
            rows_start.append(np.maximum(starts[alive], ends[alive] - length))
            ends = np.where(alive, ends - step, ends)
        if not rows_end:
            return torch.empty((0, length), dtype=torch.int64)
        out = _gather_left_padded(self.dataset.items, np.concatenate(rows_start), np.concatenate(rows_end), length)
        return torch.from_numpy(out)

    def train_pairs(self, max_history: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every (history, next item) pair inside the training sequences, as TIGER-style models train.

        Returns histories ``int64 [N, H]`` (left-padded with -1, at most ``H`` most recent items),
        targets ``int64 [N]`` and users ``int64 [N]``; N = training items that have a predecessor.
        """
        width = max_history or self.max_history
        lengths = self.train_lengths()
        counts = np.maximum(lengths - 1, 0)
        users = np.repeat(np.arange(self.n_users), counts)
        # position of each target inside the CSR item array: start + 1 .. start + length - 1
        first = np.repeat(self._starts + 1, counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        target_pos = first + within
        histories = _gather_left_padded(self.dataset.items, self._starts[users], target_pos, width)
        return (
            torch.from_numpy(histories),
            torch.from_numpy(self.dataset.items[target_pos]),
            torch.from_numpy(users.astype(np.int64)),
        )

    def histories(self, stage: str, users: np.ndarray) -> np.ndarray:
        """Capped histories before the ``stage`` target for ``users``."""
        ends = self._ends[users] - (2 if stage == "valid" else 1)
        return _gather_left_padded(self.dataset.items, self._starts[users], ends, self.max_history)

    def batches(
        self, stage: str, batch_size: int, users: np.ndarray | None = None, device: torch.device | str = "cpu"
    ) -> Iterator[UserBatch]:
        """Batches of users with capped histories, targets and (if switched on) items to exclude."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        users = np.arange(self.n_users) if users is None else np.asarray(users)
        targets = self.targets(stage)
        offset = 2 if stage == "valid" else 1
        for lo in range(0, len(users), batch_size):
            chunk = users[lo : lo + batch_size]
            exclude = None
            if self.exclude_history:
                ends = self._ends[chunk] - offset
                width = max(1, int((ends - self._starts[chunk]).max()))
                exclude = torch.from_numpy(_gather_left_padded(self.dataset.items, self._starts[chunk], ends, width))
                exclude = exclude.to(device)
            yield UserBatch(
                users=torch.from_numpy(chunk).to(device),
                items=torch.from_numpy(self.histories(stage, chunk)).to(device),
                targets=torch.from_numpy(targets[chunk]).to(device),
                exclude=exclude,
            )
