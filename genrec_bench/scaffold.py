"""``genrec-bench new-plugin NAME --kind tokenizer|generator|retriever [--dir PATH]``: a ready plugin package.

The package has the entry point in ``setup.cfg``, a working minimal implementation in ``<package>/plugin.py``,
contract tests in ``tests/`` and a ``benchmark.yaml`` comparing it with the popularity baseline.
Heavy modules are imported only when a name is checked against the installed plugins.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template

from . import __version__
from . import scaffold_templates as tpl
from .errors import GenrecError

KINDS = ("tokenizer", "generator", "retriever")
_NAME = re.compile(r"^[a-z][a-z0-9]*([_-][a-z0-9]+)*$")


@dataclass(frozen=True)
class Names:
    """Every name the scaffold derives from the plugin name (``my-cooc`` -> ``genrec_bench_my_cooc`` ...)."""

    name: str  # registered name and entry-point name
    package: str  # import name
    dist: str  # distribution name
    cls: str  # class name
    kind: str  # tokenizer, generator or retriever
    kinds: str  # registry kind: tokenizers, generators, retrievers

    @classmethod
    def of(cls, name: str, kind: str) -> Names:
        if kind not in KINDS:
            raise GenrecError(f"new-plugin --kind: expected one of {', '.join(KINDS)}, got '{kind}'")
        if not _NAME.match(name):
            raise GenrecError(
                f"new-plugin: '{name}' is not a usable plugin name; use lower-case letters, digits, "
                "'_' or '-', starting with a letter (e.g. my_cooc)"
            )
        words = re.split(r"[_-]", name)
        return cls(
            name=name,
            package="genrec_bench_" + "_".join(words),
            dist="genrec-bench-" + "-".join(words),
            cls="".join(w.capitalize() for w in words) + kind.capitalize(),
            kind=kind,
            kinds=kind + "s",
        )


def render(names: Names) -> dict[str, str]:
    """Relative path -> content of every file of the package."""
    values = {**asdict(names), "core_version": __version__, "summary": tpl.SUMMARY[names.kind]}

    def fill(text: str) -> str:
        return Template(text).substitute(values)

    return {
        "pyproject.toml": tpl.PYPROJECT,
        "setup.cfg": fill(tpl.SETUP_CFG),
        "README.md": fill(tpl.README),
        "benchmark.yaml": fill(tpl.BENCHMARK[names.kind]),
        f"{names.package}/__init__.py": fill(tpl.INIT),
        f"{names.package}/plugin.py": fill(tpl.MODULE[names.kind] + tpl.REGISTER),
        f"tests/test_{names.package.removeprefix('genrec_bench_')}.py": fill(tpl.TEST[names.kind]),
    }


def check_available(names: Names) -> None:
    """Refuse a name that an installed plugin already uses (entry point or registered component)."""
    for ep in importlib.metadata.entry_points(group="genrec_bench"):
        if ep.name == names.name:
            raise GenrecError(
                f"new-plugin: an installed plugin already uses the entry-point name '{names.name}' "
                f"({ep.value}); choose another NAME"
            )
    from .plugins import registry

    reg = registry()
    if names.name in reg.factories[names.kinds]:
        raise GenrecError(
            f"new-plugin: {names.kind} '{names.name}' is already registered by plugin "
            f"'{reg.owners[names.kinds][names.name]}'; choose another NAME"
        )


def write_plugin(name: str, kind: str, folder: Path | None = None, check: bool = True) -> Path:
    """Write the package into ``folder`` (default ``./genrec-bench-NAME``), which must be new or empty."""
    names = Names.of(name, kind)
    folder = Path(folder) if folder is not None else Path.cwd() / names.dist
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise GenrecError(f"new-plugin --dir {folder}: exists and is not an empty folder; give a new path or remove it")
    if check:
        check_available(names)
    for relative, text in render(names).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="plugin name, registered under it and used in YAML (e.g. my_cooc)")
    parser.add_argument("--kind", required=True, choices=KINDS, help="which interface the plugin implements")
    parser.add_argument("--dir", type=Path, help="folder to create (default: ./genrec-bench-NAME)")
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="don't check the name against installed plugins (faster, no plugin imports)",
    )


def main(args: argparse.Namespace) -> int:
    """Write the package and print the next steps; bad input raises GenrecError (one line, exit 2)."""
    folder = write_plugin(args.name, args.kind, args.dir, check=not args.no_check)
    names = Names.of(args.name, args.kind)
    print(f"wrote {names.kind} plugin '{names.name}' ({names.dist}) to {folder}:")
    for relative in render(names):
        print(f"  {relative}")
    print(f"""next steps:
  pip install -e {folder}          # offline: add --no-build-isolation
  genrec-bench plugins                # '{names.name}' is listed
  python -m pytest -q {folder}
  genrec-bench run {folder / "benchmark.yaml"}
  genrec-bench leaderboard results/{names.name}-quick""")
    return 0
