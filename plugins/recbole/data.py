"""genrec-bench's split as RecBole sees it: atomic files of the training sequences, id maps, batches.

RecBole only ever receives the training part of every sequence (everything before the validation item),
so it can neither re-split nor leak. Its own filtering is switched off (see ``config.DATA_CONFIG``), and an
``.item`` file lists the whole catalogue so that items seen only as validation or test targets still get ids.
RecBole numbers tokens itself (0 is its padding); ``item_map`` / ``user_map`` translate genrec-bench ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

DATASET_NAME = "genrec"
USER, ITEM = "user_id", "item_id"


def write_atomic(folder: Path, sequences: list[np.ndarray], n_items: int) -> Path:
    """``<folder>/genrec/genrec.inter`` (training interactions) and ``genrec.item`` (every item)."""
    target = folder / DATASET_NAME
    target.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    users = np.repeat(np.arange(len(sequences)), lengths)
    items = np.concatenate(sequences) if sequences else np.zeros(0, dtype=np.int64)
    lines = [f"{USER}:token\t{ITEM}:token"] + [f"{u}\t{i}" for u, i in zip(users.tolist(), items.tolist(), strict=True)]
    (target / f"{DATASET_NAME}.inter").write_text("\n".join(lines) + "\n")
    (target / f"{DATASET_NAME}.item").write_text("\n".join([f"{ITEM}:token", *map(str, range(n_items))]) + "\n")
    return folder


def id_map(dataset: Any, field: str, n: int) -> torch.Tensor:
    """RecBole's internal id of genrec-bench index ``0..n-1`` (tokens are the indices as strings)."""
    token2id = dataset.field2token_id[field]
    try:
        return torch.tensor([token2id[str(i)] for i in range(n)], dtype=torch.int64)
    except KeyError as exc:
        raise RuntimeError(f"RecBole dropped {field} {exc} while loading; its filtering must be off") from None


@dataclass
class Examples:
    """Next-item examples in RecBole's layout: histories start at column 0, padded with 0 at the end."""

    users: torch.Tensor  # [N] RecBole user ids
    item_seq: torch.Tensor  # [N, L] RecBole item ids
    item_len: torch.Tensor  # [N]
    targets: torch.Tensor  # [N] RecBole item ids

    def __len__(self) -> int:
        return int(self.targets.numel())


def training_examples(
    sequences: list[np.ndarray], max_len: int, item_map: torch.Tensor, user_map: torch.Tensor
) -> Examples:
    """Every training position t >= 1 of every user as (last ``max_len`` items before t, item t).

    The same examples RecBole's own ``SequentialDataset.data_augmentation`` makes from a training sequence.
    """
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat = torch.from_numpy(np.concatenate(sequences).astype(np.int64))
    owner = np.repeat(np.arange(len(sequences)), lengths)
    position = np.arange(len(flat)) - starts[owner]
    keep = position >= 1
    ends = np.flatnonzero(keep)  # index of each target in `flat`
    begins = np.maximum(starts[owner[keep]], ends - max_len)
    idx = torch.from_numpy(begins[:, None] + np.arange(max_len)[None, :])
    valid = idx < torch.from_numpy(ends)[:, None]
    seq = torch.where(valid, item_map[flat[idx.clamp(max=len(flat) - 1)]], 0)
    return Examples(
        users=user_map[torch.from_numpy(owner[keep])],
        item_seq=seq,
        item_len=valid.sum(dim=1),
        targets=item_map[flat[torch.from_numpy(ends)]],
    )


def histories(items: torch.Tensor, item_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """genrec-bench's left-padded (-1) histories ``[b, L]`` as RecBole's (item_seq, item_seq_len)."""
    width = items.shape[1]
    lengths = (items >= 0).sum(dim=1)
    cols = torch.arange(width, device=items.device)
    idx = (width - lengths)[:, None] + cols[None, :]
    valid = cols[None, :] < lengths[:, None]
    gathered = items.gather(1, idx.clamp(max=width - 1))
    seq = torch.where(valid, item_map.to(items.device)[gathered.clamp(min=0)], 0)
    return seq, lengths.clamp(min=1)


TINY_MAX_LEN = 10


def tiny_sequences() -> tuple[list[np.ndarray], int]:
    """Three users over eight items: enough to build and try a model at construction time.

    No sequence holds every item: BERT4Rec's negative sampler loops forever otherwise.
    """
    return [np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2]), np.array([4, 5, 6]), np.array([7, 6, 5, 4, 3])], 8
