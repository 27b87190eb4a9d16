"""Data sets: readers, preprocessing, the leave-one-out split and a content-keyed cache."""

from .dataset import RawDataset, SequenceDataset
from .loading import DatasetLoader, load_dataset
from .preprocess import Preprocessing, build_sequences
from .split import PAD, SplitData, UserBatch

__all__ = [
    "RawDataset",
    "SequenceDataset",
    "DatasetLoader",
    "load_dataset",
    "Preprocessing",
    "build_sequences",
    "SplitData",
    "UserBatch",
    "PAD",
]
