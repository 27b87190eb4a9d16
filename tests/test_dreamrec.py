"""DreamRec plugin: registration, the shared diffusion head, and learning a planted rule on CPU."""

from __future__ import annotations

import json

import torch
from conftest import synthetic_rows, write_atomic, write_benchmark

from genrec_bench.config import load_benchmark
from genrec_bench.runner import Runner


def test_dreamrec_is_registered_and_uses_contrecs_diffusion():
    from genrec_bench_plugins.contrec.diffusion import GaussianDiffusion
    from genrec_bench_plugins.dreamrec import DreamRec

    from genrec_bench import plugins

    plugins.reset()
    assert plugins.registry(strict=True).get("generators", "dreamrec") is DreamRec
    import genrec_bench_plugins.dreamrec.generator as module

    assert module.GaussianDiffusion is GaussianDiffusion  # imported, not copied


def test_dreamrec_learns_a_planted_rule(tmp_path):
    """Users walk item -> item + 1 (90%); DreamRec must find the next item far above popularity."""
    data = write_atomic(tmp_path / "tiny", "tiny", synthetic_rows(n_users=200, n_items=30, length=12))
    torch.manual_seed(0)
    torch.save(torch.randn(30, 16), tmp_path / "space.pt")  # any fixed item space: rows are the internal ids
    space = f"{{name: file, path: {tmp_path / 'space.pt'}}}"
    methods = f"""
  popularity:
    tokenizer: atomic
    generator: popularity
    retriever: full_ranking
  dreamrec:
    tokenizer: atomic
    generator: {{name: dreamrec, item_space: {space}, hidden: 32, epochs: 30, batch_size: 64, lr: 0.003,
                diffusion_steps: 50, eval_every: 0}}
    retriever: {{name: latent, metric: l2}}
"""
    bench = write_benchmark(tmp_path / "b.yaml", data, methods)
    outcomes = Runner(load_benchmark(bench), tmp_path / "r", tmp_path / "c", "cpu", show_progress=False).run()
    assert [o.status for o in outcomes] == ["ok", "ok"], [o.error for o in outcomes]
    metrics = {
        m: json.loads((tmp_path / "r" / "tiny" / "tiny" / m / "seed-0" / "result.json").read_text())
        for m in ("popularity", "dreamrec")
    }
    pop, dream = (metrics[m]["metrics"]["ndcg@10"] for m in ("popularity", "dreamrec"))
    assert dream > 0.5 and dream > pop + 0.2, (dream, pop)
    health = metrics["dreamrec"]["health"]
    assert health["generator/epochs_run"] == 30 and health["generator/final_diffusion_loss"] < 1.0
