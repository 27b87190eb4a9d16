"""Readers for the formats the field uses. Each returns a RawDataset; errors name the file and line."""

from __future__ import annotations

import ast
import csv
import gzip
import html
import importlib.util
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import RawDataset

#: Spellings of a missing text field in published files ("nan" is pandas' NaN written out).
MISSING = {"nan", "none", "null", "n/a"}


def _require_file(path: Path, what: str, fix: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; {fix}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; {fix}")
    return path


def _open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding=encoding, errors="replace", newline="")
    return open(path, encoding=encoding, errors="replace", newline="")


# --- RecBole atomic files -------------------------------------------------------------------------


def _atomic_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    handle = _open_text(path)
    header = handle.readline().rstrip("\r\n").split("\t")
    names = [h.split(":", 1)[0] for h in header]
    if not header or any(":" not in h for h in header):
        handle.close()
        raise DataError(
            f"{path}:1: the header must be tab-separated 'name:type' fields "
            f"(e.g. 'user_id:token<TAB>item_id:token'); got {header!r}"
        )

    def rows() -> Iterator[tuple[int, list[str]]]:
        with handle:
            for number, line in enumerate(handle, start=2):
                line = line.rstrip("\r\n")
                if line:
                    yield number, line.split("\t")

    return names, rows()


def read_atomic(path: str | Path, name: str | None = None) -> RawDataset:
    """RecBole atomic files ``<name>.inter`` (+ optional ``.item``) in folder ``path``."""
    folder = Path(path)
    name = name or folder.name
    inter = _require_file(
        folder / f"{name}.inter", "RecBole interaction file", "point 'path' at a folder holding <name>.inter"
    )
    names, rows = _atomic_rows(inter)
    for needed in ("user_id", "item_id"):
        if needed not in names:
            raise DataError(f"{inter}:1: the header has no '{needed}' field; fields are {names}")
    ui, ii = names.index("user_id"), names.index("item_id")
    ti = names.index("timestamp") if "timestamp" in names else None
    ri = names.index("rating") if "rating" in names else None
    users, items, stamps, ratings = [], [], [], []
    for number, fields in rows:
        if len(fields) != len(names):
            raise DataError(f"{inter}:{number}: expected {len(names)} tab-separated fields, found {len(fields)}")
        try:
            stamps.append(float(fields[ti]) if ti is not None else 0.0)
            ratings.append(float(fields[ri]) if ri is not None else 1.0)
        except ValueError as exc:
            raise DataError(f"{inter}:{number}: {exc}; timestamp and rating must be numbers") from None
        users.append(fields[ui])
        items.append(fields[ii])
    text: dict[str, str] = {}
    item_file = folder / f"{name}.item"
    if item_file.is_file():
        names, rows = _atomic_rows(item_file)
        text_cols = [
            i for i, n in enumerate(names) if any(key in n for key in ("title", "name", "class", "genre", "categor"))
        ]
        key = names.index("item_id") if "item_id" in names else 0
        for _, fields in rows:
            if len(fields) > key:
                text[fields[key]] = " ".join(fields[i] for i in text_cols if i < len(fields) and fields[i])
    return RawDataset(
        np.array(users),
        np.array(items),
        np.array(stamps, dtype=np.float64),
        np.array(ratings, dtype=np.float64),
        text,
        [inter] + ([item_file] if text else []),
    )


def embedded_ml100k_path() -> Path:
    """The MovieLens-100K folder inside the installed ``recbole`` wheel, found without importing recbole."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the embedded data set ml-100k ships inside the 'recbole' package, which is not installed; "
            "run: pip install --no-deps recbole==1.2.1"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not folder.is_dir():
        raise DataError(
            f"{folder}: not found in the installed recbole; reinstall: pip install --no-deps recbole==1.2.1"
        )
    return folder


# --- The ContRec / DeftRec layout -----------------------------------------------------------------


def read_contrec(path: str | Path) -> RawDataset:
    """``test.txt`` (one chronological sequence per line) and ``item_list.txt`` (header, then items)."""
    folder = Path(path)
    seq_file = _require_file(
        folder / "test.txt",
        "sequence file test.txt",
        "point 'path' at a folder in the ContRec/DeftRec layout (test.txt, item_list.txt)",
    )
    text: dict[str, str] = {}
    list_file = folder / "item_list.txt"
    if list_file.is_file():
        with _open_text(list_file) as handle:
            reader = csv.reader(handle, delimiter=" ", quotechar='"')
            header = next(reader, [])
            if "remap_id" not in header:
                raise DataError(f"{list_file}:1: the header must name 'remap_id' (e.g. 'org_id remap_id title')")
            key = header.index("remap_id")
            text_cols = [i for i, h in enumerate(header) if h in ("title", "category", "genres", "genre")]
            # lastfm names the columns 'category title'; put the title first in every case.
            text_cols.sort(key=lambda i: header[i] != "title")
            for number, row in enumerate(reader, start=2):
                if len(row) <= key:
                    raise DataError(f"{list_file}:{number}: expected {len(header)} space-separated fields")
                columns = (row[i] for i in text_cols if i < len(row))
                text[row[key]] = html.unescape(" ".join(f for f in columns if f and f.lower() not in MISSING))
    listed = set(text) if list_file.is_file() else None
    users: list[str] = []
    items: list[str] = []
    positions: list[int] = []
    with _open_text(seq_file) as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise DataError(f"{seq_file}:{number}: expected 'user_id item_1 ... item_n', found {line.strip()!r}")
            if not all(f.isdigit() for f in fields):
                raise DataError(f"{seq_file}:{number}: ids must be non-negative integers, found {line.strip()[:60]!r}")
            if listed is not None:
                absent = next((f for f in fields[1:] if f not in listed), None)
                if absent is not None:
                    raise DataError(
                        f"{seq_file}:{number}: item id {absent} is not in {list_file} (remap_id column); "
                        "every item of a sequence must be listed there"
                    )
            users.extend([fields[0]] * (len(fields) - 1))
            items.extend(fields[1:])
            positions.extend(range(len(fields) - 1))
    return RawDataset(
        np.array(users),
        np.array(items),
        np.array(positions, dtype=np.float64),
        None,
        text,
        [seq_file] + ([list_file] if list_file.is_file() else []),
        preprocessed=True,
    )


# --- Raw MovieLens (ML-1M / ML-10M style '::' files) ----------------------------------------------


def read_movielens(path: str | Path) -> RawDataset:
    """``ratings.dat`` (``user::item::rating::timestamp``) and optional ``movies.dat`` (``item::title::genres``)."""
    folder = Path(path)
    ratings_file = _require_file(
        folder / "ratings.dat", "MovieLens ratings.dat", "point 'path' at an unpacked MovieLens folder (ml-1m/)"
    )
    users, items, stamps, ratings = [], [], [], []
    with _open_text(ratings_file, encoding="latin-1") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("::")
            if len(fields) != 4:
                raise DataError(f"{ratings_file}:{number}: expected 'user::item::rating::timestamp'")
            try:
                ratings.append(float(fields[2]))
                stamps.append(float(fields[3]))
            except ValueError:
                raise DataError(f"{ratings_file}:{number}: rating and timestamp must be numbers") from None
            users.append(fields[0])
            items.append(fields[1])
    text: dict[str, str] = {}
    movies = folder / "movies.dat"
    if movies.is_file():
        with _open_text(movies, encoding="latin-1") as handle:
            for line in handle:
                fields = line.rstrip("\r\n").split("::")
                if len(fields) == 3:
                    text[fields[0]] = f"{fields[1]} {fields[2].replace('|', ' ')}"
    return RawDataset(
        np.array(users),
        np.array(items),
        np.array(stamps, dtype=np.float64),
        np.array(ratings, dtype=np.float64),
        text,
        [ratings_file] + ([movies] if text else []),
    )


# --- Raw Amazon reviews (2014 and 2018 JSON lines) ------------------------------------------------


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError:
                try:  # the 2014 metadata files are Python dict literals, not strict JSON
                    yield number, ast.literal_eval(line)
                except (ValueError, SyntaxError):
                    raise DataError(f"{path}:{number}: not a JSON object; is this an Amazon review file?") from None


def _amazon_text(record: dict) -> str:
    title = record.get("title") or ""
    categories = record.get("category") or record.get("categories") or []
    if categories and isinstance(categories[0], list):  # 2014: a list of category paths
        categories = categories[0]
    return html.unescape(" ".join([title, *[c for c in categories if isinstance(c, str)]]).strip())


def read_amazon(reviews: str | Path, metadata: str | Path | None = None) -> RawDataset:
    """Amazon review JSON lines (2014: ``reviewerID asin overall unixReviewTime``; 2018 the same keys)."""
    reviews = _require_file(Path(reviews), "Amazon review file", "point 'reviews' at a reviews_*.json(.gz) file")
    users, items, stamps, ratings = [], [], [], []
    for number, record in _json_lines(reviews):
        try:
            users.append(str(record["reviewerID"]))
            items.append(str(record["asin"]))
            stamps.append(float(record.get("unixReviewTime", 0)))
            ratings.append(float(record.get("overall", 1.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{reviews}:{number}: missing or invalid field {exc}; "
                "each line needs reviewerID, asin, overall and unixReviewTime"
            ) from None
    text: dict[str, str] = {}
    files = [reviews]
    if metadata is not None:
        metadata = _require_file(Path(metadata), "Amazon metadata file", "point 'metadata' at a meta_*.json(.gz) file")
        files.append(metadata)
        wanted = set(items)
        for _, record in _json_lines(metadata):
            asin = str(record.get("asin", ""))
            if asin in wanted:
                text[asin] = _amazon_text(record)
    return RawDataset(
        np.array(users),
        np.array(items),
        np.array(stamps, dtype=np.float64),
        np.array(ratings, dtype=np.float64),
        text,
        files,
    )
