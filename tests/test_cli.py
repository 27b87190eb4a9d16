"""The command line: bad input gives one line naming the file/field and the fix, exit 2, no traceback."""

import subprocess
import sys

import pytest
from conftest import write_benchmark

from genrec_bench.cli import main


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    return err


def test_help_does_not_import_torch():
    code = (
        "import sys, genrec_bench.cli as c\n"
        "try:\n    c.build_parser().parse_args(['--help'])\nexcept SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_malformed_yaml_names_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndatasets:\n  ml-100k: {}\nmethods: [unclosed\n")
    err = _error(capsys, ["run", str(bad)])
    assert f"{bad}:" in err and "malformed YAML" in err


def test_missing_benchmark_file(tmp_path, capsys):
    assert "not found" in _error(capsys, ["run", str(tmp_path / "nope.yaml")])


def test_unknown_plugin(tmp_path, capsys, tiny_atomic):
    bench = (
        write_benchmark(
            tmp_path / "b.yaml",
            tiny_atomic,
            """
  m:
    tokenizer: atomic
    generator: no_such_generator
    retriever: full_ranking
""",
        )
        .read_text()
        .replace("baseline: popularity\n", "")
    )
    (tmp_path / "b.yaml").write_text(bench)
    err = _error(capsys, ["run", str(tmp_path / "b.yaml"), "--results", str(tmp_path / "r")])
    assert "b.yaml:" in err and "methods.m.generator" in err and "unknown generator 'no_such_generator'" in err
    assert "known:" in err


def test_unknown_parameter_and_wrong_type(tmp_path, capsys, tiny_atomic):
    def bench_with(generator):
        text = (
            write_benchmark(
                tmp_path / "b.yaml",
                tiny_atomic,
                f"""
  m:
    tokenizer: atomic
    generator: {generator}
    retriever: full_ranking
""",
            )
            .read_text()
            .replace("baseline: popularity\n", "")
        )
        (tmp_path / "b.yaml").write_text(text)
        return str(tmp_path / "b.yaml")

    err = _error(capsys, ["run", bench_with("{name: sasrec, hiden: 3}"), "--results", str(tmp_path / "r")])
    assert "unknown parameter 'hiden'" in err and "hidden" in err and ":9:" in err
    err = _error(capsys, ["run", bench_with("{name: sasrec, hidden: many}"), "--results", str(tmp_path / "r")])
    assert "hidden: expected int, got 'many'" in err


def test_wrong_top_level_types(tmp_path, capsys):
    bad = tmp_path / "b.yaml"
    bad.write_text("datasets: [ml-100k]\nmethods: {}\n")
    assert "b.yaml:1: datasets: expected dict, got list" in _error(capsys, ["run", str(bad)])
    bad.write_text("datasets: {ml-100k: {}}\nmethods: {p: {tokenizer: atomic, generator: popularity}}\n")
    assert "missing 'retriever'" in _error(capsys, ["run", str(bad)])
    bad.write_text("datasets: {ml-100k: {}}\nmethodz: {}\n")
    assert "methodz: unknown top-level key" in _error(capsys, ["run", str(bad)])


def test_missing_data_path(tmp_path, capsys):
    write_benchmark(tmp_path / "b.yaml", tmp_path / "no-such-folder")
    err = _error(capsys, ["run", str(tmp_path / "b.yaml"), "--results", str(tmp_path / "r")])
    assert "no-such-folder: data folder not found" in err and "fix 'path'" in err


def test_empty_and_malformed_data_files(tmp_path, capsys, tiny_atomic):
    write_benchmark(tmp_path / "b.yaml", tiny_atomic)
    good = (tiny_atomic / "tiny.inter").read_text()
    (tiny_atomic / "tiny.inter").write_text(good + "u1\ti1\tnot-a-number\t5\n")
    err = _error(capsys, ["run", str(tmp_path / "b.yaml"), "--results", str(tmp_path / "r")])
    assert "tiny.inter:" in err and "must be numbers" in err
    (tiny_atomic / "tiny.inter").write_text("")
    assert "the file is empty" in _error(capsys, ["run", str(tmp_path / "b.yaml"), "--results", str(tmp_path / "r")])


def test_bad_input_does_not_touch_written_results(tmp_path, capsys, tiny_atomic):
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic)
    assert main(["run", str(bench), "--results", str(tmp_path / "r"), "--no-progress", "--no-leaderboard"]) == 0
    capsys.readouterr()
    cell = tmp_path / "r" / "tiny" / "tiny" / "popularity" / "seed-0" / "result.json"
    before = cell.read_text()
    bench.write_text(bench.read_text() + "\nmethods: [broken\n")
    _error(capsys, ["run", str(bench), "--results", str(tmp_path / "r")])
    assert cell.read_text() == before


def test_run_leaderboard_leaves_out_methods_removed_from_the_file(tmp_path, capsys, tiny_atomic):
    """A method renamed in the benchmark file leaves its old cells behind; the run's leaderboard ranks only the
    file's methods and says which folder it left out."""
    results = tmp_path / "r"
    old = write_benchmark(tmp_path / "old.yaml", tiny_atomic)
    assert main(["run", str(old), "--results", str(results), "--no-progress", "--no-leaderboard"]) == 0
    renamed = """
  popularity:
    tokenizer: atomic
    generator: popularity
    retriever: full_ranking
  most_popular:
    tokenizer: atomic
    generator: popularity
    retriever: full_ranking
"""
    new = write_benchmark(tmp_path / "new.yaml", tiny_atomic, methods=renamed)
    capsys.readouterr()
    assert main(["run", str(new), "--results", str(results), "--no-progress"]) == 0
    markdown = (results / "tiny" / "leaderboard" / "leaderboard.md").read_text()
    table = markdown.split("###")[0]
    assert "most\\_popular" in table or "most_popular" in table
    assert "sasrec" not in table
    assert "method 'sasrec' is not in the benchmark file; left out" in markdown


def test_debug_shows_the_traceback(tmp_path):
    from genrec_bench.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "run", str(tmp_path / "nope.yaml")])


def test_plugins_and_datasets_commands(capsys, tiny_atomic):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "sasrec" in out and "generators: popularity, random" in out
    assert main(["datasets", "--dataset", f"tiny=atomic:{tiny_atomic}"]) == 0
    assert "tiny" in capsys.readouterr().out
