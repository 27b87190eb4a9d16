"""TokenRec plugin: registration, the model's pieces, and learning a planted rule on CPU."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import synthetic_rows, write_atomic, write_benchmark

from genrec_bench.config import load_benchmark
from genrec_bench.errors import ConfigError
from genrec_bench.runner import Runner


def test_tokenrec_is_registered_and_composes_existing_plugins():
    from genrec_bench_plugins.contrec.generator import ContRecOutput
    from genrec_bench_plugins.tokenrec import TokenRec

    from genrec_bench import plugins

    plugins.reset()
    assert plugins.registry(strict=True).get("generators", "tokenrec") is TokenRec
    import genrec_bench_plugins.tokenrec as module

    assert module.ContRecOutput is ContRecOutput  # the latent retriever's input, imported, not copied
    with pytest.raises(ConfigError):
        TokenRec(prompt_length=0)


def test_tokenrec_model_reads_codes_and_a_fixed_prompt():
    from genrec_bench_plugins.tokenrec.model import EOS, TokenRecModel, cosine_embedding_loss

    torch.manual_seed(0)
    model = TokenRecModel(
        [4, 4],
        item_dim=6,
        d_model=16,
        d_kv=8,
        d_ff=32,
        heads=2,
        encoder_layers=1,
        decoder_layers=1,
        dropout=0.0,
        prompt_length=3,
        head_hidden=8,
        head_dropout=0.0,
    ).eval()
    codes = torch.tensor([[[-1, -1], [0, 3], [2, 1]]])
    tokens, mask = model.encoder_tokens(codes)
    # padding 0, prompt tokens 2..4, codebook 0 at 5..8, codebook 1 at 9..12, the end token last
    assert tokens.tolist() == [[0, 0, 5, 12, 7, 10, EOS]] and mask.tolist() == [[False, False] + [True] * 5]
    assert model(codes).shape == (1, 6)
    x = torch.tensor([[1.0, 0.0]])
    assert torch.allclose(cosine_embedding_loss(x, x, -x, 0.0), torch.zeros(1))
    assert torch.allclose(cosine_embedding_loss(x, -x, x, 0.0), torch.tensor([3.0]))


def test_tokenrec_learns_a_planted_rule(tmp_path):
    """Users walk item -> item + 1 (90%); TokenRec must find the next item far above popularity."""
    data = write_atomic(tmp_path / "tiny", "tiny", synthetic_rows(n_users=120, n_items=30, length=12))
    torch.manual_seed(0)
    torch.save(torch.randn(30, 16), tmp_path / "space.pt")  # any fixed item space: rows are the internal ids
    space = f"{{name: file, path: {tmp_path / 'space.pt'}}}"
    methods = f"""
  popularity:
    tokenizer: atomic
    generator: popularity
    retriever: full_ranking
  tokenrec:
    tokenizer: {{name: mqvae, features: {space}, hidden: [32], code_dim: 16, n_codebooks: 2, codebook_size: 16,
                epochs: 50, batch_size: 32}}
    generator: {{name: tokenrec, item_space: {space}, d_model: 32, d_kv: 16, d_ff: 64, heads: 2,
                encoder_layers: 1, decoder_layers: 1, dropout: 0.0, prompt_length: 4, head_hidden: 64,
                head_dropout: 0.0, epochs: 15, batch_size: 32, lr: 0.002, patience: 15}}
    retriever: {{name: latent, metric: cos}}
"""
    bench = write_benchmark(tmp_path / "b.yaml", data, methods)
    outcomes = Runner(load_benchmark(bench), tmp_path / "r", tmp_path / "c", "cpu", show_progress=False).run()
    assert [o.status for o in outcomes] == ["ok", "ok"], [o.error for o in outcomes]
    metrics = {
        m: json.loads((tmp_path / "r" / "tiny" / "tiny" / m / "seed-0" / "result.json").read_text())
        for m in ("popularity", "tokenrec")
    }
    pop, rec = (metrics[m]["metrics"]["recall@5"] for m in ("popularity", "tokenrec"))
    assert rec > 0.6 and rec > pop + 0.3, (rec, pop)
    assert metrics["tokenrec"]["health"]["generator/best_epoch"] >= 1
