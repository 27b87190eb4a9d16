"""End-to-end on the embedded MovieLens-100K (from the recbole wheel): popularity and a short SASRec."""

import numpy as np

from genrec_bench import store
from genrec_bench.cli import main


def test_ml100k_popularity_and_sasrec(tmp_path, capsys):
    bench = tmp_path / "ml.yaml"
    bench.write_text("""
name: ml
seeds: [0]
baseline: popularity
datasets:
  ml-100k: {}
methods:
  popularity: {tokenizer: atomic, generator: popularity, retriever: full_ranking}
  sasrec:
    tokenizer: atomic
    generator: {name: sasrec, hidden: 32, layers: 1, epochs: 6, lr: 0.002}
    retriever: full_ranking
""")
    assert main(["run", str(bench), "--results", str(tmp_path / "r"), "--no-progress"]) == 0
    cells = {m: tmp_path / "r" / "ml" / "ml-100k" / m / "seed-0" for m in ("popularity", "sasrec")}
    results = {m: store.read_result(c) for m, c in cells.items()}
    assert results["popularity"]["n_users"] == 943 and results["popularity"]["n_items"] == 1349
    # popularity is a real (weak) baseline; a few epochs of SASRec already beat it
    assert 0.03 < results["popularity"]["metrics"]["recall@10"] < 0.15
    assert results["sasrec"]["metrics"]["ndcg@10"] > results["popularity"]["metrics"]["ndcg@10"]
    per_user = store.read_per_user(cells["sasrec"])
    assert per_user["user_ids"].shape == (943,) and np.isfinite(per_user["mrr@20"]).all()
    assert "sasrec" in capsys.readouterr().out
