"""Top-k with exclusion, the chunked inner-product scan against the dense one, and fair tie-breaking."""

from pathlib import Path

import torch
from genrec_bench_plugins.tiger.prefix_index import PrefixIndex, beam_search

from genrec_bench.ranking import TieBreak, topk_inner_product, topk_scores


def test_excluded_items_never_ranked():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    exclude = torch.tensor([[0, -1], [3, 2]])
    ranking = topk_scores(scores, 3, exclude)
    assert ranking.items.tolist() == [[1, 2, 3], [1, 0, -1]]


def test_k_larger_than_catalogue_pads_with_minus_one():
    ranking = topk_scores(torch.tensor([[0.1, 0.9]]), 4)
    assert ranking.items.tolist() == [[1, 0, -1, -1]]


def test_chunked_scan_matches_dense_topk():
    g = torch.Generator().manual_seed(0)
    queries, items = torch.randn(7, 8, generator=g), torch.randn(100, 8, generator=g)
    exclude = torch.randint(0, 100, (7, 5), generator=g)
    dense = topk_scores(queries @ items.T, 10, exclude)
    chunked = topk_inner_product(queries, items, 10, exclude, item_chunk=13)
    assert torch.equal(dense.items, chunked.items)
    assert torch.allclose(dense.scores, chunked.scores)


# --- ties: random per (seed, user, item), the same in every top-k path, independent of k and of the batch ---


def _tie(seed=0, users=None, n=4):
    return TieBreak(seed, torch.arange(n) if users is None else torch.as_tensor(users))


def test_ties_are_independent_of_the_largest_k():
    scores = torch.randint(0, 3, (4, 200), generator=torch.Generator().manual_seed(1)).float()
    exclude = torch.tensor([[0, 5, -1], [7, -1, -1], [1, 2, 3], [-1, -1, -1]])
    small, large = topk_scores(scores, 10, exclude, _tie()), topk_scores(scores, 50, exclude, _tie())
    assert torch.equal(small.items, large.items[:, :10])
    ip_small = topk_inner_product(scores, torch.eye(200), 10, exclude, item_chunk=17, tie=_tie())
    ip_large = topk_inner_product(scores, torch.eye(200), 50, exclude, item_chunk=17, tie=_tie())
    assert torch.equal(ip_small.items, ip_large.items[:, :10]) and torch.equal(ip_small.items, small.items)


def test_ties_equal_across_dense_and_chunked_inner_product():
    g = torch.Generator().manual_seed(2)
    queries = torch.randint(0, 2, (6, 3), generator=g).float()
    items = torch.randint(0, 2, (300, 3), generator=g).float()
    exclude = torch.randint(0, 300, (6, 20), generator=g)
    dense = topk_scores(queries @ items.T, 30, exclude, _tie(n=6))
    for chunk in (7, 64, 1000):
        chunked = topk_inner_product(queries, items, 30, exclude, item_chunk=chunk, tie=_tie(n=6))
        assert torch.equal(dense.items, chunked.items) and torch.equal(dense.scores, chunked.scores)


def test_ties_come_out_in_a_seeded_random_order():
    scores = torch.zeros(3, 1000)
    first = topk_scores(scores, 20, tie=_tie(0, n=3)).items
    assert torch.equal(first, topk_scores(scores, 20, tie=_tie(0, n=3)).items)  # reproducible
    assert not torch.equal(first, topk_scores(scores, 20, tie=_tie(1, n=3)).items)  # another seed, another order
    assert not torch.equal(first[0], first[1])  # users differ
    assert first.float().mean() > 300  # not the lowest ids (torch.topk's order)
    alone = topk_scores(scores[:1], 20, tie=_tie(0, users=[2], n=1)).items
    assert torch.equal(alone[0], first[2])  # a user's order does not depend on its batch


def test_ties_only_among_equal_scores():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0, 0.0]])
    ranking = topk_scores(scores, 4, tie=_tie(n=1))
    assert sorted(ranking.items[0, :3].tolist()) == [1, 2, 4] and ranking.items[0, 3] == 3
    assert ranking.scores.tolist() == [[3.0, 3.0, 3.0, 2.0]]


def test_float64_scores_are_not_cast_into_ties():
    scores = (1.0 + torch.arange(100, dtype=torch.float64) * 1e-12).expand(2, -1)  # equal in float32
    for ranking in (
        topk_scores(scores, 10),
        topk_inner_product(scores, torch.eye(100, dtype=torch.float64), 10, item_chunk=30),
    ):
        assert ranking.items.tolist() == [list(range(99, 89, -1))] * 2 and ranking.scores.dtype == torch.float64


def test_beam_search_orders_tied_beams_like_the_other_paths():
    class Flat:  # a decoder that gives every code the same log-probability
        def __len__(self):
            return 2

        def log_probs(self, prefix):
            return torch.zeros(2, prefix.shape[1], 4)

    index = PrefixIndex(torch.tensor([[a, b] for a in range(4) for b in range(4)]), [4, 4])
    ranking, _ = beam_search(Flat(), index, 16, 8, None, True, _tie(3, n=2))
    assert torch.equal(ranking.items, topk_scores(torch.zeros(2, 16), 8, tie=_tie(3, n=2)).items)


def test_evaluation_breaks_ties_with_the_cell_seed():
    from genrec_bench_plugins.baselines import FullRanking

    from genrec_bench.context import RunContext
    from genrec_bench.evaluation import ranking_hits

    class Constant:
        def generate(self, batch, ctx):
            return torch.zeros(len(batch), 50)

    class Split:
        n_items, n_users = 50, 6
        dataset = None

        def batches(self, stage, batch_size, users, device):
            from genrec_bench.data.split import UserBatch

            for lo in range(0, len(users), batch_size):
                u = torch.as_tensor(users[lo : lo + batch_size])
                yield UserBatch(u, torch.zeros(len(u), 1, dtype=torch.long), u * 7 % 50, None)

    def hits(seed, batch_size):
        ctx = RunContext(torch.device("cpu"), seed, Path("."), Path("."), show_progress=False)
        return ranking_hits(Constant(), FullRanking(), Split(), "test", 25, ctx, batch_size)

    assert (hits(0, 6) == hits(0, 4)).all() and (hits(0, 6) == hits(0, 1)).all()  # batch-independent
    assert any((hits(0, 6) != hits(s, 6)).any() for s in (1, 2, 3))
