"""HSTU plugin: registration, the layer's defining pieces, and learning a planted rule on CPU."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import synthetic_rows, write_atomic, write_benchmark

from genrec_bench.config import load_benchmark
from genrec_bench.errors import ConfigError
from genrec_bench.runner import Runner


def test_hstu_is_registered_and_checks_its_parameters():
    from genrec_bench_plugins.hstu import HSTU

    from genrec_bench import plugins

    plugins.reset()
    assert plugins.registry(strict=True).get("generators", "hstu") is HSTU
    with pytest.raises(ConfigError):
        HSTU(loss="bpr")
    with pytest.raises(ConfigError):
        HSTU(temperature=0.0)


def test_hstu_layer_is_pointwise_causal_and_ignores_padding():
    from genrec_bench_plugins.hstu.model import HSTULayer, HSTUModel

    torch.manual_seed(0)
    layer = HSTULayer(dim=8, heads=2, dqk=4, dv=4, dropout=0.0, max_len=5)
    bias = layer.relative_bias(5)
    assert bias.shape == (5, 5) and torch.equal(bias[1, 3], layer.pos_bias[5 - 1 + 3 - 1])
    assert torch.equal(bias[0, 0], bias[4, 4])  # depends on j - i only
    model = HSTUModel(
        n_items=10, dim=8, layers=2, heads=2, dqk=4, dv=4, dropout=0.0, linear_dropout=0.0, max_len=5
    ).eval()
    a = torch.tensor([[-1, -1, 3, 4, 5]])
    b = torch.tensor([[-1, -1, 3, 4, 7]])
    ha, hb = model(a), model(b)
    assert torch.allclose(ha[:, 2:4], hb[:, 2:4])  # causal: a later item never changes earlier states
    assert torch.allclose(ha.norm(dim=-1)[:, 2:], torch.ones(1, 3))  # L2-normalised outputs
    padded = model(torch.tensor([[-1, -1, -1, 4, 5]]))[:, -1]
    assert torch.allclose(model(torch.tensor([[4, 5]]))[:, -1], padded, atol=1e-6)  # shorter rows padded


@pytest.mark.parametrize("loss", ["softmax", "sampled"])
def test_hstu_learns_a_planted_rule(tmp_path, loss):
    """Users walk item -> item + 1 (90%); HSTU must find the next item far above popularity."""
    data = write_atomic(tmp_path / "tiny", "tiny", synthetic_rows(n_users=120, n_items=30, length=12))
    methods = f"""
  popularity:
    tokenizer: atomic
    generator: popularity
    retriever: full_ranking
  hstu:
    tokenizer: atomic
    generator: {{name: hstu, dim: 32, dqk: 16, dv: 16, layers: 2, dropout: 0.0, linear_dropout: 0.0,
                loss: {loss}, negatives: 16, epochs: 25, batch_size: 32, lr: 0.003, patience: 25}}
    retriever: full_ranking
"""
    bench = write_benchmark(tmp_path / "b.yaml", data, methods)
    outcomes = Runner(load_benchmark(bench), tmp_path / "r", tmp_path / "c", "cpu", show_progress=False).run()
    assert [o.status for o in outcomes] == ["ok", "ok"], [o.error for o in outcomes]
    metrics = {
        m: json.loads((tmp_path / "r" / "tiny" / "tiny" / m / "seed-0" / "result.json").read_text())
        for m in ("popularity", "hstu")
    }
    pop, hstu = (metrics[m]["metrics"]["recall@5"] for m in ("popularity", "hstu"))
    assert hstu > 0.7 and hstu > pop + 0.4, (hstu, pop)
    assert metrics["hstu"]["health"]["generator/best_epoch"] >= 1
