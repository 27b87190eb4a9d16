"""Every benchmark file shipped in benchmarks/ loads and names real plugins with valid parameters (nothing runs:
the paper profiles need a GPU and the shared data sets)."""

from pathlib import Path

import pytest

from genrec_bench.config import expand_cells, load_benchmark
from genrec_bench.runner import validate_cells

FILES = sorted((Path(__file__).resolve().parents[1] / "benchmarks").rglob("*.yaml"))


def test_the_benchmark_folder_is_found():
    assert any(f.name == "contrec_vs_tiger.yaml" for f in FILES) and any(f.parent.name == "paper" for f in FILES)


@pytest.mark.parametrize("path", FILES, ids=[f.relative_to(f.parents[1]).as_posix() for f in FILES])
def test_shipped_benchmark_validates(path):
    pytest.importorskip("peft")  # the ContRec plugins register only with the contrec extra
    bench = load_benchmark(path)
    validate_cells(bench, expand_cells(bench))
