"""Importing RecBole 1.2.1 on current Python stacks: version shims, kept inside this plugin.

RecBole 1.2.1 predates numpy 2, torch 2.6 and setuptools 81. What breaks, and what this module does:

- ``Config.compatibility_settings`` reads ``np.float_``, ``np.complex_``, ``np.unicode_`` (removed in numpy 2);
  ``np.bool8`` too in places: the aliases are set before RecBole is imported (only if missing). That method
  then sets ``np.float``, ``np.int``, ... which RecBole's metrics read; the same legacy aliases are set here too,
  so that RecBole's evaluator also works without a Config (only if missing, to the values RecBole sets).
- ``recbole.utils`` imports ``torch.utils.tensorboard`` (needs the ``tensorboard`` package) for its Trainer only;
  when tensorboard is absent a stub module stands in (this plugin never uses RecBole's Trainer).
- ``recbole.quick_start`` imports ray (and ray needs ``pkg_resources``): it is never imported here.
- ``torch.load`` defaults to ``weights_only=True`` on torch >= 2.6, so RecBole's checkpoint reload fails:
  the best weights are kept in memory instead (no checkpoint files at all).
- ``Config`` parses ``sys.argv`` and sets ``CUDA_VISIBLE_DEVICES``: :func:`quiet_recbole` hides both.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from genrec_bench.errors import PluginError

INSTALL_HINT = 'install it with: pip install --no-deps recbole==1.2.1 && pip install "genrec-bench[recbole]"'
_NUMPY_ALIASES = {
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "bool8": np.bool_,
    "float": np.float64,
    "int": np.int_,
    "complex": np.complex128,
    "object": np.object_,
    "str": np.str_,
    "unicode": np.str_,
}


def _numpy_aliases() -> None:
    for name, value in _NUMPY_ALIASES.items():
        if name not in vars(np):  # np.float etc. raise through numpy's module __getattr__
            setattr(np, name, value)


def _tensorboard_stub() -> None:
    try:
        import torch.utils.tensorboard  # noqa: F401

        return
    except ImportError:
        pass

    class SummaryWriter:  # RecBole's Trainer only; never called by this plugin
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError("tensorboard is not installed (RecBole's Trainer needs it; this plugin does not)")

    stub = types.ModuleType("torch.utils.tensorboard")
    stub.SummaryWriter = SummaryWriter  # type: ignore[attr-defined]
    sys.modules["torch.utils.tensorboard"] = stub


def import_recbole() -> types.SimpleNamespace:
    """RecBole's modules this plugin uses, with the shims applied; PluginError naming the fix if missing."""
    try:
        importlib.import_module("recbole")
    except ImportError:
        raise PluginError(f"generator 'recbole' needs RecBole, which is not installed; {INSTALL_HINT}") from None
    _numpy_aliases()
    _tensorboard_stub()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from recbole.config import Config
            from recbole.data import create_dataset
            from recbole.data.interaction import Interaction
            from recbole.data.transform import construct_transform
            from recbole.utils import ModelType, get_model, init_seed
    except ImportError as exc:
        raise PluginError(f"RecBole is installed but cannot be imported ({exc}); {INSTALL_HINT}") from None
    return types.SimpleNamespace(
        Config=Config,
        create_dataset=create_dataset,
        Interaction=Interaction,
        construct_transform=construct_transform,
        ModelType=ModelType,
        get_model=get_model,
        init_seed=init_seed,
    )


def import_recbole_metrics() -> types.ModuleType:
    """``recbole.evaluator.metrics`` (needs scikit-learn), shims applied."""
    import_recbole()
    try:
        return importlib.import_module("recbole.evaluator.metrics")
    except ImportError as exc:
        raise PluginError(f"RecBole's evaluator cannot be imported ({exc}); {INSTALL_HINT}") from None


@contextlib.contextmanager
def quiet_recbole() -> Iterator[None]:
    """Build a RecBole Config without it reading our command line or changing CUDA_VISIBLE_DEVICES."""
    argv, cuda = sys.argv, os.environ.get("CUDA_VISIBLE_DEVICES")
    sys.argv = [argv[0] if argv else "genrec-bench"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.argv = argv
        if cuda is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = cuda
