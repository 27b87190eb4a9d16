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


def test_cached_beam_with_id_token_head_equals_the_plain_path():
    """The fast decoder (prompt KV cache, head over the level's id tokens only) gives the plain path's
    log-probabilities at every level, and the same beam-search ranking; the loss reads the same id-token head."""
    import torch.nn.functional as F
    from genrec_bench_plugins.contrec.backbone import load_backbone
    from genrec_bench_plugins.lcrec.generator import LCRecDecoder, PromptLM
    from genrec_bench_plugins.tiger.prefix_index import PrefixIndex, beam_search

    lm, tok = load_backbone("random", None, {"hidden_size": 64, "num_hidden_layers": 2}, 0)
    model = PromptLM(lm, tok, [5, 6, 7], "History: ", " Next:").eval()
    torch.manual_seed(0)
    history = torch.stack([torch.randint(0, s, (6, 4)) for s in model.sizes], -1)
    history[0, :3] = -1  # padded histories of different lengths
    history[2, 0] = -1
    tokens, mask = model.rows(history)
    fast, plain = LCRecDecoder(model, tokens, mask, True), LCRecDecoder(model, tokens, mask, False)
    for level, width in [(0, 1), (1, 3), (2, 5)]:
        parts = [torch.randint(0, s, (6, width)) for s in model.sizes[:level]]
        prefix = torch.stack(parts, -1) if level else torch.zeros((6, 1, 0), dtype=torch.long)
        assert torch.allclose(fast.log_probs(prefix), plain.log_probs(prefix), atol=1e-5)
    codes = torch.unique(torch.stack([torch.randint(0, s, (60,)) for s in model.sizes], -1), dim=0)
    index = PrefixIndex(codes, model.sizes)
    exclude = torch.randint(0, codes.shape[0], (6, 3))
    a, _ = beam_search(LCRecDecoder(model, tokens, mask, True), index, 8, 8, exclude)
    b, _ = beam_search(LCRecDecoder(model, tokens, mask, False), index, 8, 8, exclude)
    assert torch.equal(a.items, b.items) and torch.allclose(a.scores, b.scores, atol=1e-5)
    target = codes[:6]
    loss, n = model(history, target)
    full = torch.cat([tokens, target + model.code_offsets], 1)
    logits = model.logits(full, torch.cat([mask, torch.ones_like(target, dtype=torch.bool)], 1), 4)[:, :-1]
    plain_loss = sum(
        F.cross_entropy(logits[:, i, o : o + s], target[:, i], reduction="sum")
        for i, (o, s) in enumerate(zip(model.offsets, model.sizes, strict=True))
    )
    assert n == 18 and torch.allclose(loss, plain_loss, atol=1e-4)


def test_frozen_vocabulary_is_the_same_model_and_trains_only_the_id_rows():
    """``train_vocab: ids`` splits the (tied) embedding into frozen pretrained rows and trained id rows: the same
    loss and beam scores as the full model at the same weights; a step leaves the pretrained rows alone."""
    from genrec_bench_plugins.contrec.backbone import load_backbone
    from genrec_bench_plugins.lcrec.generator import LCRecDecoder, PromptLM

    models = []
    for vocab in ("all", "ids"):
        lm, tok = load_backbone("random", None, {"hidden_size": 64, "num_hidden_layers": 2}, 0)
        torch.manual_seed(1)  # the new rows' initialisation
        models.append(PromptLM(lm, tok, [5, 6, 7], "History: ", " Next:", vocab))
    full, split = models
    history = torch.stack([torch.randint(0, s, (4, 3)) for s in full.sizes], -1)
    target = history[:, 0]
    (a, _), (b, _) = full(history, target), split(history, target)
    assert torch.allclose(a, b, atol=1e-5)
    tokens, mask = full.rows(history)
    prefix = target[:, None, :2]
    for cached in (True, False):
        pa = LCRecDecoder(full.eval(), tokens, mask, cached).log_probs(prefix)
        pb = LCRecDecoder(split.eval(), tokens, mask, cached).log_probs(prefix)
        assert torch.allclose(pa, pb, atol=1e-5)
    vocab = split.lm.get_input_embeddings().vocab.clone()
    trained = [p for p in split.parameters() if p.requires_grad]
    assert all(p.shape[0] != vocab.shape[0] for p in trained)  # no pretrained-vocabulary-sized parameter
    optimizer = torch.optim.AdamW(trained, lr=0.1)
    split.train()(history, target)[0].backward()
    optimizer.step()
    assert torch.equal(split.lm.get_input_embeddings().vocab, vocab)
