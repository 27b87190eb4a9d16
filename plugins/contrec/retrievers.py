"""Retrievers over ContRec outputs: ``latent`` (vector vs item vectors), ``text`` (generated text vs item texts),
and ``hybrid`` (latent score boosted where the text matches). Full ranking, history excluded, memory bounded."""

from __future__ import annotations

import logging
import re

import torch

from genrec_bench.errors import ConfigError
from genrec_bench.features import item_features
from genrec_bench.interfaces import Ranking, Retriever
from genrec_bench.ranking import topk_inner_product, topk_scores

log = logging.getLogger("genrec_bench")
METRICS = ("l2", "inner", "cos")
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class TextIndex:
    """Bag-of-words vectors (CountVectorizer-like, L2-normalised) of the item texts, as a sparse matrix."""

    def __init__(self, texts: list[str]):
        self.vocab: dict[str, int] = {}
        rows, cols = [], []
        for i, text in enumerate(texts):
            for w in words(text):
                rows.append(i)
                cols.append(self.vocab.setdefault(w, len(self.vocab)))
        self.n = len(texts)
        self.matrix = self._normalised(
            torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long), self.n
        )

    def _normalised(self, rows: torch.Tensor, cols: torch.Tensor, n: int) -> torch.Tensor:
        shape = (n, max(1, len(self.vocab)))
        m = torch.sparse_coo_tensor(
            torch.stack([rows, cols]), torch.ones(len(rows)), shape, check_invariants=False
        ).coalesce()
        norms = torch.zeros(n).index_add_(0, m.indices()[0], m.values().square()).sqrt().clamp(min=1e-12)
        return torch.sparse_coo_tensor(
            m.indices(), m.values() / norms[m.indices()[0]], shape, check_invariants=False
        ).coalesce()

    def similarity(self, queries: list[str]) -> torch.Tensor:
        """Cosine similarity ``[len(queries), n_items]`` between each query and every item text."""
        rows, cols = [], []
        for i, text in enumerate(queries):
            for w in words(text):
                if w in self.vocab:
                    rows.append(i)
                    cols.append(self.vocab[w])
        q = torch.zeros(len(queries), self.matrix.shape[1])
        if rows:
            q.index_put_((torch.tensor(rows), torch.tensor(cols)), torch.ones(len(rows)), accumulate=True)
        q = q / q.norm(dim=1, keepdim=True).clamp(min=1e-12)
        return torch.sparse.mm(self.matrix, q.T).T


def _outputs(outputs, what: str):
    if not hasattr(outputs, "vectors") or not hasattr(outputs, "texts"):
        raise ConfigError(
            f"retriever '{what}' reads ContRec outputs (a vector and a text per user); "
            f"use it with generator: contrec, got {type(outputs).__name__}"
        )
    return outputs


class Latent(Retriever):
    """Ranks items by ``-||x - e_i||`` (``l2``, the paper's default), ``<x, e_i>`` (``inner``) or cosine.

    ``item_space``: the item vectors; null uses the space the generator diffused in (from its outputs).
    """

    def __init__(self, metric: str = "l2", item_space: str | dict | None = None, item_chunk: int = 65_536):
        if metric not in METRICS:
            raise ConfigError(f"retriever metric: expected one of {', '.join(METRICS)}, got {metric!r}")
        self.metric, self.item_space, self.item_chunk = metric, item_space, item_chunk
        self._items: torch.Tensor | None = None
        self._spec = None

    def fit(self, data, tokenizer, ctx) -> None:
        self.data, self.ctx = data, ctx
        if self.item_space is not None:
            self._load(self.item_space)

    def _load(self, spec) -> torch.Tensor:
        if self._items is None or self._spec != spec:
            self._items = item_features(spec, self.data, self.ctx, where="retriever item_space").to(self.ctx.device)
            self._spec = spec
        return self._items

    def items(self, outputs) -> torch.Tensor:
        return self._load(self.item_space if self.item_space is not None else outputs.space)

    def scores(self, outputs) -> torch.Tensor:
        """Full score matrix ``[B, n_items]`` (higher is better): the caller bounds B."""
        x, e = outputs.vectors.float().to(self.ctx.device), self.items(outputs)
        if self.metric == "inner":
            return x @ e.T
        if self.metric == "cos":
            return torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(e, dim=1).T
        return -torch.cdist(x, e)

    def rank(self, outputs, k: int, exclude: torch.Tensor | None) -> Ranking:
        x, e = _outputs(outputs, "latent").vectors.float().to(self.ctx.device), self.items(outputs)
        if self.metric == "cos":
            x, e = torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(e, dim=1)
        elif self.metric == "l2":  # -||x-e||^2 + ||x||^2 = 2<x,e> - ||e||^2: the same order, chunked as a product
            x = torch.cat([2 * x, -torch.ones_like(x[:, :1])], dim=1)
            e = torch.cat([e, e.square().sum(1, keepdim=True)], dim=1)
        return topk_inner_product(x, e, k, exclude, self.item_chunk)


class Text(Retriever):
    """Ranks items by the bag-of-words cosine between the generated text and each item's answer text."""

    def __init__(self) -> None:
        self.index: TextIndex | None = None

    def fit(self, data, tokenizer, ctx) -> None:
        self.ctx = ctx

    def similarity(self, outputs) -> torch.Tensor:
        if self.index is None or self.index.n != len(outputs.item_texts):
            self.index = TextIndex(outputs.item_texts)
        return self.index.similarity(outputs.texts).to(self.ctx.device)

    def rank(self, outputs, k: int, exclude: torch.Tensor | None) -> Ranking:
        return topk_scores(self.similarity(_outputs(outputs, "text")), k, exclude)


def hybrid_scores(
    latent: torch.Tensor, similarity: torch.Tensor, pi: float, threshold: float, rule: str
) -> torch.Tensor:
    """``s_i * (1 + pi * t_i)`` for positive scores, ``s_i / (1 + pi * t_i)`` for negative ones (a match always
    raises an item); ``t_i = 1[sim_i > threshold]`` (rule ``threshold``) or ``sim_i`` (rule ``soft``)."""
    t = (similarity > threshold).float() if rule == "threshold" else similarity.float()
    boost = 1 + pi * t
    return torch.where(latent >= 0, latent * boost, latent / boost)


class Hybrid(Retriever):
    """Latent score (``metric``) combined with the text match; ``pi = 0.05`` and ``threshold = 0.9`` as the paper.
    The default metric is the inner product: the paper's hybrid score is <x, e_i> (1 + pi t_i) (paper-notes 3.5)."""

    def __init__(
        self,
        metric: str = "inner",
        pi: float = 0.05,
        threshold: float = 0.9,
        rule: str = "threshold",
        item_space: str | dict | None = None,
    ):
        if rule not in ("threshold", "soft"):
            raise ConfigError(f"retriever 'hybrid'.rule: 'threshold' or 'soft', got {rule!r}")
        if pi < 0:
            raise ConfigError(f"retriever 'hybrid'.pi: expected >= 0, got {pi}")
        self.latent, self.text = Latent(metric, item_space), Text()
        self.pi, self.threshold, self.rule = pi, threshold, rule
        self.matched = self.users = 0
        self.unwritable = False  # the generator said its backbone cannot write the answer (outputs.text_usable)
        self._warned = False

    def fit(self, data, tokenizer, ctx) -> None:
        self.latent.fit(data, tokenizer, ctx)
        self.text.fit(data, tokenizer, ctx)

    def rank(self, outputs, k: int, exclude: torch.Tensor | None) -> Ranking:
        outputs = _outputs(outputs, "hybrid")
        sim = self.text.similarity(outputs)
        self.matched += int((sim > self.threshold).any(1).sum())
        self.users += sim.shape[0]
        if getattr(outputs, "text_usable", None) is False:
            self.unwritable = True
            if not self._warned:  # the first ranking after the generator's fit
                log.warning(
                    "retriever 'hybrid': the generator's backbone cannot write the answer text (LM loss "
                    "above a uniform guess); the text bonus carries no signal and hybrid ranks as latent "
                    "(health: text_usable 0)"
                )
                self._warned = True
        scores = hybrid_scores(self.latent.scores(outputs), sim, self.pi, self.threshold, self.rule)
        return topk_scores(scores, k, exclude)

    def stage_health(self) -> dict[str, float]:
        """``text_match_rate`` of the users ranked since the last call (none: no figure), then reset; and
        ``text_usable``: 0 when the backbone cannot write text (the generator's LM loss is above a uniform guess)
        or no generated answer matched any item's text, else 1. Hybrid then ranks exactly as latent."""
        out = {}
        if self.users:
            out = {
                "text_match_rate": self.matched / self.users,
                "text_usable": float(self.matched > 0 and not self.unwritable),
            }
        self.matched = self.users = 0
        return out
