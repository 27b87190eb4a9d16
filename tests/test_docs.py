"""docs/writing-plugins.md documents every hook and every part of the plugin contract, with today's signatures."""

import dataclasses
import inspect
from pathlib import Path

import pytest

from genrec_bench import hookspecs
from genrec_bench.data.split import UserBatch
from genrec_bench.interfaces import Generator, Ranking, Retriever, Tokenizer

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "writing-plugins.md"


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def _call(name: str, function) -> str:
    """``name(a, b)`` from the function's parameters, without ``self``."""
    params = [p for p in inspect.signature(function).parameters if p != "self"]
    return f"{name}({', '.join(params)})"


HOOKS = [name for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, "genrec_bench_spec")]


def test_the_hookspecs_are_found():
    assert {"register_tokenizers", "register_generators", "register_retrievers"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_arguments(guide, hook):
    assert f"`{_call(hook, getattr(hookspecs, hook))}`" in guide


def _public_methods(cls) -> list[str]:
    return [name for name, value in vars(cls).items() if not name.startswith("_") and inspect.isfunction(value)]


METHODS = [(cls, name) for cls in (Tokenizer, Generator, Retriever) for name in _public_methods(cls)]


def test_the_interface_methods_are_found():
    assert {(c.__name__, n) for c, n in METHODS} >= {
        ("Tokenizer", "fit"),
        ("Tokenizer", "encode"),
        ("Tokenizer", "health"),
        ("Generator", "fit"),
        ("Generator", "generate"),
        ("Generator", "health"),
        ("Retriever", "fit"),
        ("Retriever", "rank"),
        ("Retriever", "health"),
    }


@pytest.mark.parametrize("cls,method", METHODS, ids=[f"{c.__name__}.{m}" for c, m in METHODS])
def test_every_interface_method_is_documented_with_its_arguments(guide, cls, method):
    assert f"`{_call(f'{cls.__name__}.{method}', getattr(cls, method))}`" in guide


def test_tokenizer_kind_is_documented(guide):
    assert "`Tokenizer.kind`" in guide
    for kind in ("atomic", "discrete", "continuous"):
        assert f'"{kind}"' in guide


FIELDS = [("Ranking", f.name) for f in dataclasses.fields(Ranking)]
FIELDS += [("UserBatch", f.name) for f in dataclasses.fields(UserBatch)]
FIELDS += [("UserBatch", name) for name, value in vars(UserBatch).items() if isinstance(value, property)]


@pytest.mark.parametrize("cls,field", FIELDS, ids=[f"{c}.{f}" for c, f in FIELDS])
def test_every_ranking_and_batch_field_is_documented(guide, cls, field):
    assert f"`{cls}.{field}`" in guide


def test_entry_point_group_and_switches_are_documented(guide):
    for text in (
        "genrec_bench =",
        "[project.entry-points.genrec_bench]",
        "GENREC_BENCH_STRICT_PLUGINS",
        "GENREC_BENCH_LOAD_PLUGINS",
        "genrec-bench new-plugin",
        "plugins: [",
    ):
        assert text in guide
