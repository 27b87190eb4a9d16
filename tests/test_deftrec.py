"""DeftRec plugins: the negative-interaction term, DDIM respacing, sampling, tokenizer, samplers, end to end (CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("peft")

from conftest import write_benchmark  # noqa: E402
from genrec_bench_plugins.contrec.diffusion import GaussianDiffusion, respaced_steps  # noqa: E402
from genrec_bench_plugins.deftrec.model import MeanPool, NegativeSampler, RecencyPool, ResidualDenoiser  # noqa: E402
from genrec_bench_plugins.deftrec.tokenizer import MaskedKWayEncoder, MaskedKWayTokenizer  # noqa: E402

from genrec_bench.config import load_benchmark  # noqa: E402
from genrec_bench.errors import ConfigError  # noqa: E402
from genrec_bench.runner import Runner  # noqa: E402


def yaml_dict(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


TINY_LLAMA = (
    "{hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1}"
)


class Oracle(nn.Module):
    """The exact denoiser when the clean vector is the condition itself: x0 = cond (either parameterisation)."""

    def __init__(self, dim: int, prediction: str):
        super().__init__()
        self.dim, self.prediction, self.alpha_bar = dim, prediction, None

    def forward(self, x, cond, t):
        if self.prediction == "x0":
            return cond
        a = self.alpha_bar[t].unsqueeze(-1)
        return (x - a.sqrt() * cond) / (1 - a).sqrt()


def _diffusion(denoiser, dim, prediction="epsilon", steps=1000, **kw) -> GaussianDiffusion:
    diff = GaussianDiffusion(
        denoiser, dim, steps=steps, schedule="linear", prediction=prediction, guidance=0.0, p_uncond=0.0, **kw
    )
    if isinstance(denoiser, Oracle):
        denoiser.alpha_bar = diff.alpha_bar
    return diff


@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
@torch.no_grad()
def test_negative_term_sign(prediction):
    torch.manual_seed(0)
    pos, neg = torch.randn(64, 4), torch.randn(64, 3, 4) + 3.0
    diff = _diffusion(Oracle(4, prediction), 4, prediction)
    rng = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    # the condition names the positive: it denoises it perfectly and the negatives badly -> below log 2
    e_pos, term, x0_hat = diff.negative_loss(pos, neg, pos, rng())
    assert float(e_pos) < 1e-8 and float(term) < np.log(2) - 0.25 and torch.allclose(x0_hat, pos, atol=1e-4)
    # the condition names a negative: the positive denoises worse -> above log 2
    _, flipped, _ = diff.negative_loss(pos, neg, neg[:, 0], rng())
    assert float(flipped) > np.log(2) + 0.1
    # zero weights switch the negatives off
    _, off, _ = diff.negative_loss(pos, neg, neg[:, 0], rng(), weights=torch.zeros(64, 3))
    assert float(off) == 0.0


def test_negative_term_is_log2_when_the_denoiser_ignores_its_input():
    class Zero(nn.Module):
        dim = 4

        def forward(self, x, cond, t):
            return torch.zeros_like(x)

    pos, neg = torch.randn(32, 4), torch.randn(32, 2, 4)
    e_pos, term, _ = _diffusion(Zero(), 4).negative_loss(pos, neg, pos)  # epsilon errors are both mean(noise^2)
    assert float(term) == pytest.approx(float(np.log(2)), abs=1e-6) and float(e_pos) > 0


def test_decreasing_the_negative_term_denoises_the_positive_better():
    torch.manual_seed(0)
    dim, n = 8, 256
    pos = torch.randn(n, dim)
    neg = pos[torch.randperm(n)].unsqueeze(1)  # other users' items
    diff = _diffusion(ResidualDenoiser(dim, dim, 1000, hidden=64, dropout=0.0), dim)

    def gap() -> float:  # mean (e_neg - e_pos) on fixed draws
        with torch.no_grad():
            _, term, _ = diff.negative_loss(pos, neg, pos, torch.Generator().manual_seed(9))
        return float(term)

    before = gap()
    opt = torch.optim.Adam(diff.parameters(), lr=3e-3)
    for _ in range(150):
        _, term, _ = diff.negative_loss(pos, neg, pos)
        opt.zero_grad()
        term.backward()  # the negative term alone
        opt.step()
    after = gap()
    assert after < before and after < float(np.log(2)) - 0.05  # now the positive denoises better than the negative
    # the gradient w.r.t. the positive's error is positive, w.r.t. the negative's error negative (BPR)
    e = torch.tensor([0.5, 0.7], requires_grad=True)
    torch.nn.functional.softplus(e[0] - e[1]).backward()
    assert e.grad[0] > 0 > e.grad[1]


def test_ddim_respacing_keeps_the_schedule_end_points():
    seq = respaced_steps(1000, 100)
    assert (
        seq[0] == 999
        and seq[-1] == 0
        and len(seq) == 100
        and all(a > b for a, b in zip(seq[:-1], seq[1:], strict=True))
    )
    assert respaced_steps(1000, 1000) == list(range(999, -1, -1)) == respaced_steps(1000, 5000)
    assert respaced_steps(10, 2) == [9, 0]
    visited: list[int] = []
    oracle = Oracle(3, "epsilon")
    diff = _diffusion(oracle, 3)

    def record(x, cond, t):
        visited.append(int(t[0]))
        return Oracle.forward(oracle, x, cond, t)

    oracle.forward = record
    diff.sample(torch.zeros(2, 3), steps=7)
    assert visited[0] == 999 and visited[-1] == 0 and len(visited) == 7  # never the released start at t = 99


@pytest.mark.parametrize("steps", [None, 50])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sampling_an_exact_point_mass_returns_the_point(steps, eta):
    point = torch.tensor([1.5, -2.0, 0.5])
    diff = _diffusion(Oracle(3, "epsilon"), 3, eta=eta)
    out = diff.sample(point.expand(16, 3), steps=steps, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, point.expand(16, 3), atol=1e-3)


def test_negative_samplers():
    counts = np.array([5, 0, 1, 0, 10, 0])
    targets = torch.tensor([0, 2, 4, 0])
    g = torch.Generator().manual_seed(0)
    neg, w = NegativeSampler("popularity", 50, counts)(targets, g)
    assert neg.shape == (4, 50) and set(neg.unique().tolist()) <= {0, 2, 4}
    assert torch.equal(w, (neg != targets[:, None]).float())
    neg, w = NegativeSampler("in-batch", 3, counts)(targets, g)
    assert set(neg.unique().tolist()) <= {0, 2, 4} and float(w[0].sum()) == float((neg[0] != 0).sum())
    neg, _ = NegativeSampler("uniform", 200, counts)(targets, g)
    assert neg.min() >= 0 and neg.max() <= 5 and len(neg.unique()) == 6


def test_masked_kway_encoder_masks_only_in_training_and_pretrains():
    torch.manual_seed(0)
    model = MaskedKWayEncoder(6, n_tokens=3, token_dim=5, dropout=0.0, mask_ratio=0.5, output_relu=True)
    x = torch.randn(10, 6)
    assert model.encode(x).shape == (10, 3, 5) and bool((model.encode(x) >= 0).all())
    assert torch.equal(model.encode(x), model.encode(x))  # no masking without noise
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(model.encode(x, noise=True, generator=g), model.encode(x))
    assert model.reconstruct(model.encode(x)).shape == (10, 6)
    tok = MaskedKWayTokenizer(n_tokens=2, token_dim=8, pretrain=True, barlow=0.1)
    terms = tok.losses(MaskedKWayEncoder(6, 2, 8, 0.2, 0.1, True), x)
    assert set(terms) == {"recon", "barlow", "total"} and torch.isfinite(terms["total"])


def _run(tmp_path, data, methods):
    text = write_benchmark(tmp_path / "b.yaml", data, methods).read_text().replace("baseline: popularity\n", "")
    (tmp_path / "b.yaml").write_text(text)
    return Runner(load_benchmark(tmp_path / "b.yaml"), tmp_path / "r", tmp_path / "c", "cpu", show_progress=False).run()


def test_end_to_end_with_a_tiny_random_llama(tmp_path, tiny_atomic):
    space = "{name: lightgcn, dim: 8, epochs: 2}"
    gen = (
        f"name: deftrec, backbone: random, backbone_config: {TINY_LLAMA}, item_space: {space}, lora_r: 2, "
        f"denoiser_hidden: 16, diffusion_steps: 50, samples_per_epoch: 32, batch_size: 16, max_new_tokens: 4, "
        f"title_chars: 6, target_chars: 6, eval_batch: 64"
    )
    methods = f"""
  deftrec:
    tokenizer: {{name: masked_kway, features: {space}, token_dim: 8}}
    generator: {{{gen}, epochs: 2, sample_steps: 10, pooling: recency, recency_decay: 0.7}}
    retriever: hybrid
  deftrec_pretrained:
    tokenizer: {{name: masked_kway, features: {space}, token_dim: 8, pretrain: true, epochs: 3}}
    generator: {{{gen}, epochs: 1, eval_every: 0, tokenizer_mode: frozen, negative_sampler: in-batch,
                n_negatives: 2, negative_mean: false, pooling: encoder, cond_dim: 8, diffusion_repeats: 2}}
    retriever: {{name: latent, metric: l2}}
  frozen_untrained:
    tokenizer: {{name: masked_kway, features: {space}, token_dim: 8}}
    generator: {{{gen}, tokenizer_mode: frozen}}
    retriever: latent
"""
    outcomes = _run(tmp_path, tiny_atomic, methods)
    assert [o.status for o in outcomes] == ["ok", "ok", "failed"], [o.error for o in outcomes]
    assert "untrained tokenizer" in outcomes[2].error
    result = json.loads((tmp_path / "r" / "tiny" / "tiny" / "deftrec" / "seed-0" / "result.json").read_text())
    assert 0.0 <= result["metrics"]["ndcg@10"] <= 1.0
    health = result["health"]
    assert {
        "generator/final_negative_loss",
        "generator/final_diffusion_loss",
        "tokenizer/item_token_var_mean",
        "retriever/test/text_match_rate",
    } <= set(health)
    assert health["generator/epochs_run"] == 2 and health["generator/sample_steps"] == 10
    assert health["generator/best_epoch"] in (1, 2) and health["tokenizer/pretrained"] == 0.0
    assert health["generator/sample_temperature"] == 1.0
    start, trained = health["generator/recency_weight_last_item_init"], health["generator/recency_weight_last_item"]
    assert 0 < start < 1 and 0 < trained < 1 and trained != start  # decay 0.7 at the start; training moves it


def test_encoder_pooling_has_a_position_for_every_history_slot(tiny_atomic, tmp_path):
    """With condition: history the condition holds prompt_items x K slots (+ the last position); the encoder's
    position table must cover them (it was sized for the answer, max_new_tokens + 2, so later slots shared one)."""
    from genrec_bench_plugins.deftrec.generator import DeftRec

    from genrec_bench.context import RunContext
    from genrec_bench.data import SplitData, load_dataset

    ctx = RunContext(torch.device("cpu"), 0, tmp_path / "cache", tmp_path / "work", show_progress=False)
    spec = {"loader": "atomic", "path": str(tiny_atomic), "name": "tiny"}
    data = SplitData(load_dataset("tiny", spec, tmp_path / "cache"), max_history=8)
    tok = MaskedKWayTokenizer(features={"name": "lightgcn", "dim": 8, "epochs": 2}, token_dim=8, pretrain=True)
    tok.fit(data, ctx)
    gen = DeftRec(
        backbone="random",
        backbone_config=yaml_dict(TINY_LLAMA),
        item_space={"name": "lightgcn", "dim": 8, "epochs": 2},
        lora_r=2,
        pooling="encoder",
        cond_dim=8,
        condition="history",
        prompt_items=6,
        max_new_tokens=4,
        diffusion_steps=10,
    )
    gen._build(data, tok, ctx)
    assert gen.head.pool.positions.num_embeddings == 6 * 2 + 1 > 4 + 2


def test_recency_pooling_weights_by_position_from_the_end():
    """decay 1 is the released mean; decay < 1 weights the r-th valid position from the end by decay ** r
    (left-padded rows: padding gets no weight); a bad decay is a config error."""
    torch.manual_seed(0)
    states = torch.randn(2, 5, 3)
    mask = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    assert torch.allclose(RecencyPool(8, 1.0)(states, mask), MeanPool()(states, mask), atol=1e-6)
    pooled = RecencyPool(8, 0.5)(states, mask)
    w = torch.tensor([0.25, 0.5, 1.0]) / 1.75
    assert torch.allclose(pooled[0], (states[0, 2:] * w[:, None]).sum(0), atol=1e-6)
    w = 0.5 ** torch.arange(4, -1, -1.0)
    assert torch.allclose(pooled[1], (states[1] * (w / w.sum())[:, None]).sum(0), atol=1e-6)
    with pytest.raises(ConfigError, match="recency_decay"):
        RecencyPool(8, 0.0)
