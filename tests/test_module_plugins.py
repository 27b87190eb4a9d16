"""Plugins named by module path in the YAML (``plugins: [my_module]``), through ``genrec_bench.cli.main``."""

import json
import sys

import pytest
from conftest import write_benchmark

from genrec_bench import plugins
from genrec_bench.cli import main

MODULE = '''
"""A quick-experiment plugin: reversed item order as scores."""
import torch

from genrec_bench import hookimpl
from genrec_bench.interfaces import Generator

__version__ = "0.3"


class LastIdFirst(Generator):
    def __init__(self, boost: float = 1.0):
        self.boost = boost

    def fit(self, data, tokenizer, validate, ctx):
        self.n_items = data.n_items

    def generate(self, batch, ctx):
        return self.boost * torch.arange(self.n_items, dtype=torch.float32).expand(len(batch), -1)

    def health(self):
        return {"boost": float(self.boost)}


@hookimpl
def register_generators(register):
    register("last_id_first", LastIdFirst)
'''

METHODS = """
  popularity: {tokenizer: atomic, generator: popularity, retriever: full_ranking}
  quick: {tokenizer: atomic, generator: {name: last_id_first, boost: 2.0}, retriever: full_ranking}
"""


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    """A folder on sys.path; modules imported from it are forgotten afterwards."""
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    plugins.reset()
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if name.startswith("quick_plugin"):
            del sys.modules[name]
    plugins.reset()


def _run(tmp_path, bench, capsys):
    code = main(
        [
            "-q",
            "run",
            str(bench),
            "--results",
            str(tmp_path / "r"),
            "--device",
            "cpu",
            "--no-progress",
            "--no-leaderboard",
        ]
    )
    return code, capsys.readouterr()


def test_yaml_module_plugin_runs(tmp_path, tiny_atomic, module_dir, capsys):
    (module_dir / "quick_plugin_ok.py").write_text(MODULE)
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, METHODS, extra="plugins: [quick_plugin_ok]\n")
    code, out = _run(tmp_path, bench, capsys)
    assert code == 0, out.err
    result = json.loads((tmp_path / "r" / "tiny" / "tiny" / "quick" / "seed-0" / "result.json").read_text())
    assert result["status"] == "ok" and result["health"]["generator/boost"] == 2.0
    assert plugins.registry().version_of("generators", "last_id_first") == "quick_plugin_ok==0.3"


def test_yaml_module_plugin_in_a_package(tmp_path, tiny_atomic, module_dir, capsys):
    package = module_dir / "quick_plugin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "experiment.py").write_text(MODULE)
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, METHODS, extra="plugins: [quick_plugin_pkg.experiment]\n")
    code, out = _run(tmp_path, bench, capsys)
    assert code == 0, out.err


@pytest.mark.parametrize(
    "module,source,reason",
    [
        ("quick_plugin_missing", None, "ModuleNotFoundError"),
        ("quick_plugin_broken", "import torch\nraise ImportError('needs the foo package')\n", "needs the foo package"),
        ("quick_plugin_typo", "def register_generators(register:\n", "SyntaxError"),
    ],
)
def test_failing_import_is_one_line_exit_2(tmp_path, tiny_atomic, module_dir, capsys, module, source, reason):
    if source is not None:
        (module_dir / f"{module}.py").write_text(source)
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, METHODS, extra=f"plugins: [{module}]\n")
    code, out = _run(tmp_path, bench, capsys)
    err = out.err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"cannot import plugin module '{module}'" in err and reason in err
    line = bench.read_text().splitlines().index(f"plugins: [{module}]") + 1
    assert f"{bench}:{line}: plugins" in err
    assert not (tmp_path / "r" / "tiny" / "tiny").exists()  # nothing ran
