"""LC-Rec plugin: unique ids from the uniform last level, and an LLM over index tokens that never emits an
invalid id through the trie-constrained beam retriever, learning a planted rule on CPU."""

from __future__ import annotations

import json

import torch
from conftest import synthetic_rows, write_atomic, write_benchmark

from genrec_bench.config import load_benchmark
from genrec_bench.runner import Runner


def test_uniform_last_level_gives_every_item_its_own_id():
    from genrec_bench_plugins.lcrec.ids import sinkhorn, unique_last_codes

    torch.manual_seed(0)
    codes = torch.randint(0, 2, (50, 3))  # 4 prefixes for 50 items: many collisions
    distances = torch.rand(50, 16)
    out = unique_last_codes(codes, distances)
    assert torch.unique(out, dim=0).shape[0] == 50 and torch.equal(out[:, :2], codes[:, :2])
    alone = torch.tensor([[0, 0, 5], [1, 1, 3]])
    assert torch.equal(unique_last_codes(alone, torch.rand(2, 8)), alone)  # no collision: nothing moves
    plan = sinkhorn(torch.rand(6, 4), 0.05, 200)
    assert torch.allclose(plan.sum(0), torch.full((4,), 0.25), atol=1e-4)
    assert torch.allclose(plan.sum(1), torch.full((6,), 1 / 6), atol=1e-3)


def test_lcrec_never_emits_an_invalid_id_and_learns_a_planted_rule(tmp_path):
    from genrec_bench import plugins

    plugins.reset()
    assert plugins.registry(strict=True).get("generators", "lcrec").__name__ == "LCRec"
    data = write_atomic(tmp_path / "tiny", "tiny", synthetic_rows(n_users=120, n_items=30, length=12))
    torch.manual_seed(0)
    torch.save(torch.randn(30, 16), tmp_path / "space.pt")
    space = f"{{name: file, path: {tmp_path / 'space.pt'}}}"
    methods = f"""
  popularity:
    tokenizer: atomic
    generator: popularity
    retriever: full_ranking
  lcrec:
    tokenizer: {{name: lcrec_ids, features: {space}, hidden: [32], latent_dim: 8, levels: 2, codebook_size: 16,
                epochs: 30, batch_size: 32}}
    generator: {{name: lcrec, backbone: random, backbone_config: {{hidden_size: 64, num_hidden_layers: 2}},
                max_history: 4, epochs: 8, batch_size: 32, lr: 0.003, patience: 8}}
    retriever: {{name: beam, beam_size: 10}}
"""
    bench = write_benchmark(tmp_path / "b.yaml", data, methods)
    outcomes = Runner(load_benchmark(bench), tmp_path / "r", tmp_path / "c", "cpu", show_progress=False).run()
    assert [o.status for o in outcomes] == ["ok", "ok"], [o.error for o in outcomes]
    metrics = {
        m: json.loads((tmp_path / "r" / "tiny" / "tiny" / m / "seed-0" / "result.json").read_text())
        for m in ("popularity", "lcrec")
    }
    health = metrics["lcrec"]["health"]
    assert health["tokenizer/collision_rate"] == 0.0
    assert health.get("retriever/test/invalid_id_rate", 0.0) == 0.0
    pop, rec = (metrics[m]["metrics"]["recall@5"] for m in ("popularity", "lcrec"))
    assert rec > 0.5 and rec > pop + 0.2, (rec, pop)
