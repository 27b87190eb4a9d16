"""Top-k with exclusion, and the chunked inner-product scan against the dense one."""
import torch

from genrec_bench.ranking import topk_inner_product, topk_scores


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
