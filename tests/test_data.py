"""Readers on small files the tests write, preprocessing, and the leave-one-out split."""

import gzip
import json

import numpy as np
import pytest
from conftest import write_atomic

from genrec_bench.data import Preprocessing, SplitData, build_sequences, load_dataset, readers
from genrec_bench.errors import DataError


def test_atomic_reader_and_item_text(tmp_path):
    folder = write_atomic(tmp_path / "d", "d", [("1", "10", 5, 3), ("1", "11", 4, 1)], {"10": "Toy Story"})
    raw = readers.read_atomic(folder, "d")
    assert raw.users.tolist() == ["1", "1"] and raw.timestamps.tolist() == [3.0, 1.0]
    assert raw.item_text["10"] == "Toy Story Drama"


def test_atomic_reader_names_the_bad_line(tmp_path):
    folder = write_atomic(tmp_path / "d", "d", [("1", "10", 5, 3)])
    with open(folder / "d.inter", "a") as handle:
        handle.write("2\t11\tfive\t4\n")
    with pytest.raises(DataError, match=r"d.inter:3:"):
        readers.read_atomic(folder, "d")


def test_empty_and_missing_files_are_clear(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "e.inter").write_text("")
    with pytest.raises(DataError, match="empty"):
        readers.read_atomic(tmp_path / "e", "e")
    with pytest.raises(DataError, match="not found"):
        readers.read_contrec(tmp_path / "nowhere")


def test_contrec_layout(tmp_path):
    (tmp_path / "test.txt").write_text("0 0 1 2 3\n1 2 1 0 4\n")
    (tmp_path / "item_list.txt").write_text(
        'org_id remap_id title\nA 0 "Red &amp; Blue"\nB 1 nan\nC 2 ""\nD 3 none\nE 4 null\n'
    )
    raw = readers.read_contrec(tmp_path)
    data = build_sequences(raw, "c", Preprocessing(k_core=0, dedup=False))
    assert data.sequence(1).tolist() == [2, 1, 0, 4]
    assert data.item_text[0] == "Red & Blue" and data.item_text[1] == "" and data.item_text[3] == ""


def test_contrec_item_absent_from_item_list_names_the_line(tmp_path):
    (tmp_path / "test.txt").write_text("0 0 1 2\n1 2 7 0\n")
    (tmp_path / "item_list.txt").write_text("org_id remap_id title\nA 0 a\nB 1 b\nC 2 c\n")
    with pytest.raises(DataError, match=r"test.txt:2: item id 7 is not in .*item_list.txt"):
        readers.read_contrec(tmp_path)


def test_contrec_bad_line(tmp_path):
    (tmp_path / "test.txt").write_text("0 0 1 2\n1 x y\n")
    with pytest.raises(DataError, match=r"test.txt:2:"):
        readers.read_contrec(tmp_path)


def test_movielens_raw(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::5::4::100\n1::6::2::50\n")
    (tmp_path / "movies.dat").write_text("5::Heat (1995)::Action|Crime\n", encoding="latin-1")
    raw = readers.read_movielens(tmp_path)
    assert raw.ratings.tolist() == [4.0, 2.0] and raw.item_text["5"] == "Heat (1995) Action Crime"


@pytest.mark.parametrize("gz", [False, True])
def test_amazon_2014_and_2018(tmp_path, gz):
    reviews = [
        {"reviewerID": "A", "asin": "x", "overall": 5.0, "unixReviewTime": 2},
        {"reviewerID": "A", "asin": "y", "overall": 3.0, "unixReviewTime": 1},
    ]
    text = "\n".join(json.dumps(r) for r in reviews) + "\n"
    meta_2014 = "{'asin': 'x', 'title': 'Lipstick', 'categories': [['Beauty', 'Makeup']]}\n"
    meta_2018 = json.dumps({"asin": "y", "title": "Glue", "category": ["Industrial", "Adhesives"]}) + "\n"
    suffix = ".json.gz" if gz else ".json"
    opener = gzip.open if gz else open
    with opener(tmp_path / f"reviews{suffix}", "wt") as h:
        h.write(text)
    with opener(tmp_path / f"meta{suffix}", "wt") as h:
        h.write(meta_2014 + meta_2018)
    raw = readers.read_amazon(tmp_path / f"reviews{suffix}", tmp_path / f"meta{suffix}")
    assert raw.items.tolist() == ["x", "y"]
    assert raw.item_text == {"x": "Lipstick Beauty Makeup", "y": "Glue Industrial Adhesives"}


def test_amazon_missing_field(tmp_path):
    (tmp_path / "r.json").write_text('{"asin": "x"}\n')
    with pytest.raises(DataError, match=r"r.json:1: .*reviewerID"):
        readers.read_amazon(tmp_path / "r.json")


def _raw(rows):
    from genrec_bench.data import RawDataset

    users, items, ratings, stamps = zip(*rows, strict=True)
    return RawDataset(np.array(users), np.array(items), np.array(stamps, float), np.array(ratings, float))


def test_threshold_dedup_order_and_short_users():
    rows = [
        ("a", "1", 5, 3),
        ("a", "2", 5, 1),
        ("a", "3", 1, 2),
        ("a", "2", 5, 4),
        ("a", "4", 5, 5),
        ("b", "1", 5, 1),
        ("b", "2", 5, 2),
    ]
    data = build_sequences(_raw(rows), "t", Preprocessing(min_rating=4, k_core=0, dedup=True))
    assert data.user_ids.tolist() == ["a"]  # b has only 2 interactions
    assert [data.item_ids[i] for i in data.sequence(0)] == ["2", "1", "4"]


def test_k_core_is_iterative():
    # item 9 has 2 users; dropping it leaves user c with 2 items, which drops c, which drops item 8 (2 users)
    rows = [
        (u, i, 1, t)
        for t, (u, i) in enumerate(
            [
                ("a", "1"),
                ("a", "2"),
                ("a", "8"),
                ("b", "1"),
                ("b", "2"),
                ("b", "8"),
                ("c", "1"),
                ("c", "2"),
                ("c", "9"),
                ("d", "9"),
                ("d", "1"),
                ("d", "2"),
                ("c", "8"),
            ]
        )
    ]
    data = build_sequences(_raw(rows), "t", Preprocessing(k_core=3, dedup=True))
    assert sorted(data.item_ids.tolist()) == ["1", "2", "8"]
    assert sorted(data.user_ids.tolist()) == ["a", "b", "c"]


def _split(sequences, max_history=3):
    rows = [(f"u{u}", str(i), 1, t) for u, seq in enumerate(sequences) for t, i in enumerate(seq)]
    data = build_sequences(_raw(rows), "s", Preprocessing(k_core=0, dedup=False))
    return SplitData(data, max_history=max_history)


def test_leave_one_out_targets_and_histories():
    split = _split([[0, 1, 2, 3, 4], [5, 6, 7]])
    ids = split.dataset.item_ids
    assert [ids[i] for i in split.targets("test")] == ["4", "7"]
    assert [ids[i] for i in split.targets("valid")] == ["3", "6"]
    batch = next(split.batches("test", 10))
    decoded = [[ids[i] if i >= 0 else None for i in row] for row in batch.items.tolist()]
    assert decoded == [["1", "2", "3"], [None, "5", "6"]]
    assert batch.exclude.shape[1] == 4  # the whole history, not the capped one
    valid = next(split.batches("valid", 10))
    assert [ids[i] for i in valid.items[0].tolist()] == ["0", "1", "2"]


def test_train_windows_use_every_training_target_once():
    split = _split([list(range(12)), [20, 21, 22, 23]])
    windows = split.train_windows(4)
    targets = sorted(
        int(split.dataset.item_ids[cur])
        for row in windows.tolist()
        for prev, cur in zip(row[:-1], row[1:], strict=True)
        if prev >= 0 and cur >= 0
    )
    assert targets == list(range(1, 10)) + [21]
    assert split.train_item_counts().sum() == 10 + 2


def test_cache_is_reused_and_keyed_by_content(tmp_path):
    folder = write_atomic(tmp_path / "d", "d", [("1", str(i), 5, i) for i in range(5)])
    spec = {"loader": "atomic", "path": str(folder)}
    first = load_dataset("d", spec, tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "datasets").glob("*.npz"))) == 1
    again = load_dataset("d", spec, tmp_path / "cache")
    assert again.fingerprint == first.fingerprint
    write_atomic(folder, "d", [("1", str(i), 5, i) for i in range(6)])
    changed = load_dataset("d", spec, tmp_path / "cache")
    assert changed.fingerprint != first.fingerprint and changed.n_items == 6


def test_train_pairs_cover_every_training_position():
    split = _split([[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]], max_history=2)
    histories, targets, users = split.train_pairs()
    ids = split.dataset.item_ids
    decoded = [
        ([ids[i] for i in h if i >= 0], ids[t]) for h, t in zip(histories.tolist(), targets.tolist(), strict=True)
    ]
    assert decoded == [(["0"], "1"), (["0", "1"], "2"), (["1", "2"], "3"), (["6"], "7")]
    assert users.tolist() == [0, 0, 0, 1]
