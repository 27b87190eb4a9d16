"""TIGER: the constrained beam, learning a deterministic rule, save/reload, bad input."""

import math

import pytest
import torch
from conftest import write_atomic
from genrec_bench_plugins.tiger import BeamSearch, Tiger
from genrec_bench_plugins.tiger.prefix_index import PrefixIndex, beam_search

from genrec_bench.config import load_benchmark
from genrec_bench.errors import ConfigError, DataError
from genrec_bench.runner import Runner


class RandomDecoder:
    """Arbitrary but fixed next-code distributions: any beam must still be a real item."""

    def __init__(self, batch: int, sizes: list[int], seed: int = 0):
        self.batch, self.sizes = batch, sizes
        self.g = torch.Generator().manual_seed(seed)

    def __len__(self):
        return self.batch

    def select(self, rows):
        return RandomDecoder(len(range(self.batch)[rows]), self.sizes)

    def log_probs(self, prefix):
        b, w, t = prefix.shape
        return torch.randn(b, w, self.sizes[t], generator=self.g).log_softmax(-1)


def _codes(n_items=50, sizes=(4, 4, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randperm(math.prod(sizes), generator=g)[:n_items]
    return torch.stack([(keys // (sizes[1] * sizes[2])) % sizes[0], (keys // sizes[2]) % sizes[1], keys % sizes[2]], 1)


def test_constrained_beam_returns_valid_distinct_items_and_respects_exclusion():
    codes, sizes = _codes(), [4, 4, 5]
    index = PrefixIndex(codes, sizes)
    exclude = torch.tensor([[0, 1, 2, -1]] * 6)
    ranking, invalid = beam_search(RandomDecoder(6, sizes), index, beam=10, k=10, exclude=exclude)
    items = ranking.items
    assert invalid == 0 and (items >= 0).all() and (items < 50).all()
    assert all(len(set(row)) == 10 for row in items.tolist())
    assert not torch.isin(items, torch.tensor([0, 1, 2])).any()


def test_beam_wider_than_catalogue_returns_every_valid_item():
    codes, sizes = _codes(), [4, 4, 5]
    index = PrefixIndex(codes, sizes)
    exclude = torch.tensor([[7, 8]])
    ranking, _ = beam_search(RandomDecoder(1, sizes), index, beam=80, k=60, exclude=exclude)
    found = ranking.items[0][ranking.items[0] >= 0].tolist()
    assert sorted(found) == [i for i in range(50) if i not in (7, 8)]
    assert (ranking.items[0, 48:] == -1).all()


def test_unconstrained_beam_reports_invalid_ids():
    codes, sizes = _codes(n_items=10), [4, 4, 5]
    ranking, invalid = beam_search(
        RandomDecoder(4, sizes), PrefixIndex(codes, sizes), beam=10, k=10, exclude=None, constrained=False
    )
    assert invalid > 0 and ((ranking.items == -1).sum() >= invalid)


def test_colliding_codes_are_refused():
    codes = torch.tensor([[0, 1], [0, 1], [1, 0]])
    with pytest.raises(ConfigError, match="de-duplication"):
        PrefixIndex(codes, [2, 2])


def _rule_dataset(tmp_path, n_items=24, n_users=80, length=8):
    rows = []
    for user in range(n_users):
        start = (user * 7) % n_items
        rows += [(f"u{user}", f"i{(start + s) % n_items}", 1, s) for s in range(length)]
    return write_atomic(tmp_path / "rule", "rule", rows)


def _rule_benchmark(tmp_path, folder, epochs=25):
    path = tmp_path / "rule.yaml"
    path.write_text(f"""name: rule
protocol: {{ks: [1, 5], max_history: 5, valid_metric: recall@1}}
datasets:
  rule: {{loader: atomic, path: {folder}}}
methods:
  tiger:
    tokenizer: {{name: random_ids, levels: 2, codebook_size: 8}}
    generator: {{name: tiger, d_model: 32, d_kv: 8, d_ff: 64, heads: 2, encoder_layers: 1, decoder_layers: 1,
                epochs: {epochs}, batch_size: 32, lr: 0.003, warmup_steps: 10, patience: 50, eval_every: 10,
                dropout: 0.0, n_user_tokens: 4}}
    retriever: {{name: beam, beam_size: 5}}
""")
    return path


def test_tiger_learns_a_deterministic_next_item_rule(tmp_path):
    bench = _rule_benchmark(tmp_path, _rule_dataset(tmp_path))
    outcome = Runner(load_benchmark(bench), tmp_path / "r", tmp_path / "c", "cpu", show_progress=False).run()[0]
    assert outcome.status == "ok", outcome.error
    assert outcome.metrics["recall@1"] > 0.9


def test_save_and_reload_give_the_same_rankings(tmp_path):
    from genrec_bench_plugins.tiger import RandomIds

    from genrec_bench.context import RunContext
    from genrec_bench.data import SplitData, load_dataset

    data = SplitData(
        load_dataset("rule", {"loader": "atomic", "path": str(_rule_dataset(tmp_path))}, tmp_path / "c"), max_history=5
    )
    ctx = RunContext(torch.device("cpu"), 0, tmp_path / "c", tmp_path, show_progress=False)
    tokenizer = RandomIds(levels=2, codebook_size=8)
    tokenizer.fit(data, ctx)
    tiger = Tiger(d_model=16, d_kv=4, d_ff=32, heads=2, encoder_layers=1, decoder_layers=1, epochs=2, n_user_tokens=4)
    tiger.fit(data, tokenizer, lambda: {"ndcg@10": 0.0}, ctx)
    retriever = BeamSearch(beam_size=10)
    retriever.fit(data, tokenizer, ctx)
    batch = next(data.batches("test", 16))
    with torch.no_grad():
        before = retriever.rank(tiger.generate(batch, ctx), 10, batch.exclude)
        tiger.save(tmp_path / "tiger.pt")
        after = retriever.rank(Tiger.load(tmp_path / "tiger.pt").generate(batch, ctx), 10, batch.exclude)
    assert torch.equal(before.items, after.items)
    assert torch.allclose(before.scores, after.scores)

    with pytest.raises(ConfigError, match="built for ids of 3 codes"):
        Tiger(code_length=3).fit(data, tokenizer, lambda: {}, ctx)
    batch.items[0] = -1
    with pytest.raises(DataError, match="empty history"):
        tiger.generate(batch, ctx)


class PreferFirstCode(RandomDecoder):
    def log_probs(self, prefix):
        b, w, t = prefix.shape
        logits = torch.zeros(b, w, self.sizes[t])
        logits[..., 0] = 10.0
        return logits.log_softmax(-1)


def test_subtrees_of_excluded_items_are_pruned_before_they_take_the_beam():
    codes = torch.tensor([[0, 0], [0, 1], [1, 0]])
    index = PrefixIndex(codes, [2, 2])
    ranking, _ = beam_search(PreferFirstCode(1, [2, 2]), index, beam=1, k=1, exclude=torch.tensor([[0, 1]]))
    assert ranking.items.tolist() == [[2]]
