"""Data-set loaders: the embedded MovieLens-100K and readers for the field's common layouts."""

from __future__ import annotations

from pathlib import Path

from genrec_bench import hookimpl
from genrec_bench.data import Preprocessing, RawDataset, readers
from genrec_bench.errors import DataError


def _folder(path: str | None, loader: str) -> Path:
    if not path:
        raise DataError(f"loader '{loader}' needs 'path': the folder that holds the data files")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: data folder not found for loader '{loader}'; fix 'path'")
    return folder


class EmbeddedML100K:
    """MovieLens-100K from the installed recbole wheel; 5-core, every rating counts as an interaction."""

    default_preprocessing = Preprocessing(min_rating=None, k_core=5, dedup=True)

    def __init__(self) -> None:
        self.folder = readers.embedded_ml100k_path()

    def sources(self) -> list[Path]:
        return [self.folder / "ml-100k.inter", self.folder / "ml-100k.item"]

    def load(self) -> RawDataset:
        return readers.read_atomic(self.folder, "ml-100k")


class AtomicFiles:
    """RecBole atomic files ``<name>.inter`` / ``<name>.item`` in ``path`` (name defaults to the folder name)."""

    default_preprocessing = Preprocessing(min_rating=None, k_core=0, dedup=True)

    def __init__(self, path: str, name: str | None = None) -> None:
        self.folder = _folder(path, "atomic")
        self.name = name or self.folder.name

    def sources(self) -> list[Path]:
        item = self.folder / f"{self.name}.item"
        return [self.folder / f"{self.name}.inter"] + ([item] if item.is_file() else [])

    def load(self) -> RawDataset:
        return readers.read_atomic(self.folder, self.name)


class ContRecLayout:
    """The ContRec/DeftRec layout (``test.txt``, ``item_list.txt``): sequences used as published."""

    default_preprocessing = Preprocessing(min_rating=None, k_core=0, dedup=False)

    def __init__(self, path: str) -> None:
        self.folder = _folder(path, "contrec")

    def sources(self) -> list[Path]:
        items = self.folder / "item_list.txt"
        return [self.folder / "test.txt"] + ([items] if items.is_file() else [])

    def load(self) -> RawDataset:
        return readers.read_contrec(self.folder)


class MovieLensRaw:
    """Raw MovieLens ``ratings.dat`` + ``movies.dat`` (ML-1M, ML-10M); 5-core by default."""

    default_preprocessing = Preprocessing(min_rating=None, k_core=5, dedup=True)

    def __init__(self, path: str) -> None:
        self.folder = _folder(path, "movielens")

    def sources(self) -> list[Path]:
        movies = self.folder / "movies.dat"
        return [self.folder / "ratings.dat"] + ([movies] if movies.is_file() else [])

    def load(self) -> RawDataset:
        return readers.read_movielens(self.folder)


class AmazonRaw:
    """Raw Amazon review JSON lines (2014 or 2018, gzipped or not) and optional metadata; 5-core by default."""

    default_preprocessing = Preprocessing(min_rating=None, k_core=5, dedup=True)

    def __init__(self, reviews: str, metadata: str | None = None) -> None:
        self.reviews = Path(reviews).expanduser()
        self.metadata = Path(metadata).expanduser() if metadata else None

    def sources(self) -> list[Path]:
        return [self.reviews] + ([self.metadata] if self.metadata else [])

    def load(self) -> RawDataset:
        return readers.read_amazon(self.reviews, self.metadata)


@hookimpl
def register_datasets(register):
    register("ml-100k", EmbeddedML100K)
    register("atomic", AtomicFiles)
    register("contrec", ContRecLayout)
    register("movielens", MovieLensRaw)
    register("amazon", AmazonRaw)
