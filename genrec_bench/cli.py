"""The ``genrec-bench`` command. Heavy modules are imported inside the commands so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import typing
from pathlib import Path

log = logging.getLogger("genrec_bench")


def default_cache_dir() -> Path:
    """``$GENREC_BENCH_CACHE``, else ``$XDG_CACHE_HOME/genrec-bench``, else ``~/.cache/genrec-bench``."""
    if os.environ.get("GENREC_BENCH_CACHE"):
        return Path(os.environ["GENREC_BENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "genrec-bench"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: <what>; see genrec-bench <command> --help``, exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
#: Handlers writing run.log, so an error that ends the command is recorded there too.
_FILE_HANDLERS: list[logging.Handler] = []


def _dataset_override(spec: str) -> tuple[str, dict]:
    """``ml-100k`` or ``NAME=LOADER[:PATH]`` (e.g. ``beauty=contrec:../shared/data/beauty``)."""
    from .config import check_name
    from .errors import ConfigError

    name, sep, rest = spec.partition("=")
    loader, _, path = rest.partition(":") if sep else (name, "", "")
    if not name or not loader:
        raise ConfigError(
            f"--dataset {spec!r}: expected a loader name or NAME=LOADER[:PATH], "
            "e.g. --dataset beauty=contrec:../shared/data/beauty"
        )
    check_name(name, f"--dataset {spec!r}", "data set name")
    check_name(loader, f"--dataset {spec!r}", "loader name")
    if not sep:
        return spec, {}
    return name, ({"loader": loader, "path": path} if path else {"loader": loader})


def _writable_dir(path: Path, what: str) -> None:
    """Create ``path`` (and parents) or raise a one-line error saying which option points where."""
    from .errors import ConfigError

    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what}: {path} is a file, not a folder; point it at a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{what}: cannot create folder {path} ({exc.strerror}); point it at a writable folder"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{what}: folder {path} is not writable; point it at a writable folder")


def _seeds(text: str) -> list[int]:
    from .errors import ConfigError
    from .protocol import first_duplicate

    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, e.g. --seeds 0,1,2") from None
    if not all(0 <= s < 2**32 for s in seeds):
        raise ConfigError(f"--seeds {text!r}: seeds are integers from 0 to 2**32-1")
    twice = first_duplicate(seeds)
    if twice is not None:
        raise ConfigError(f"--seeds {text!r}: seed {twice} is listed twice; list each seed once")
    return seeds


def _check_values(args: argparse.Namespace) -> None:
    """Values argparse does not check, refused before the benchmark is even read."""
    from .errors import ConfigError

    if args.device is not None and not _DEVICE_RE.fullmatch(args.device):
        raise ConfigError(f"--device {args.device!r}: not a device; use auto, cpu, cuda or cuda:N")
    if args.max_minutes is not None:
        try:
            minutes = float(args.max_minutes)
        except ValueError:
            minutes = float("nan")
        if not math.isfinite(minutes) or minutes <= 0:
            raise ConfigError(
                f"--max-minutes {args.max_minutes!r}: expected a positive number of minutes, e.g. --max-minutes 12"
            )
        args.max_minutes = minutes


def cmd_run(args: argparse.Namespace) -> int:
    from .config import check_cell_count, expand_cells, load_benchmark

    _check_values(args)
    overrides = list(args.set or [])
    bench = load_benchmark(args.benchmark, overrides)
    if args.dataset:
        bench.datasets = dict(_dataset_override(s) for s in args.dataset)
    if args.seeds is not None:
        bench.seeds = _seeds(args.seeds)
    check_cell_count(bench)
    from .store import results_root

    results = results_root(Path(args.results or bench.raw.get("results_dir") or "results"), bench.name)
    cache = Path(args.cache_dir or bench.raw.get("cache_dir") or default_cache_dir())
    if not args.dry_run:
        from .lock import ResultsLock

        _writable_dir(results / bench.name, "--results" if args.results else "results_dir")
        _writable_dir(cache, "--cache-dir" if args.cache_dir else "the cache folder")
        ResultsLock(results / bench.name, wait=args.wait).check()  # before run.log: the writer's log stays its own
    if not args.dry_run:
        from .store import LOG_FILE

        _log_to_file(results / bench.name / LOG_FILE)
    from .environment import configure_threads  # imports torch: after the cheap checks
    from .runner import Runner

    choice = configure_threads(args.threads)  # before any parallel work; recorded in every result.json
    log.info(
        "threads: %d (%s; %d cores available, %d other busy)",
        choice.threads,
        choice.source,
        choice.cpus_available,
        choice.busy_others,
    )
    runner = Runner(
        bench,
        results,
        cache,
        args.device,
        show_progress=not args.no_progress,
        rerun=args.rerun,
        methods=args.method,
        executor=args.executor,
        address=args.address,
        max_minutes=args.max_minutes,
        wait=args.wait,
    )
    if args.dry_run:
        return _print_dry_run(runner)
    outcomes = runner.run()
    failed = [o for o in outcomes if o.status == "failed"]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed", "deferred")}
    deferred = f", {counts['deferred']} deferred (--max-minutes)" if counts["deferred"] else ""
    print(
        f"\n{len(outcomes)} cells: {counts['ok']} run, {counts['skipped']} skipped (finished earlier), "
        f"{counts['failed']} failed{deferred}; results in {runner.out_dir}"
    )
    for outcome in failed:
        print(f"  failed: {outcome.cell.relative_dir()}: {outcome.error}")
    for outcome in outcomes:
        if outcome.status == "deferred":
            print(f"  deferred: {outcome.cell.relative_dir()}: {outcome.error}")
    if counts["deferred"]:
        print("  run the same command again to start the deferred cells")
    if not args.no_leaderboard:
        labels = sorted({cell.method for cell in expand_cells(bench)})  # swept variants by their labels
        _print_leaderboard(runner.out_dir, bench.baseline, labels)
    return 1 if failed else 0  # deferred cells are not failures: everything started finished


def _print_dry_run(runner) -> int:
    plan = runner.dry_run()
    words = {"run": "would run", "skip": "skip", "defer": "deferred"}
    for cell, action, why in plan:
        print(f"{words[action]:<10} {cell.relative_dir()}  ({why})")
    counts = {a: sum(p[1] == a for p in plan) for a in words}
    print(
        f"\n{len(plan)} cells: {counts['run']} would run, {counts['skip']} skipped, {counts['defer']} deferred; "
        f"nothing was run or written ({runner.out_dir})"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .status import status_lines

    lines, counts = status_lines(Path(args.results), args.benchmark)
    print("\n".join(lines))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from .status import merge

    _writable_dir(Path(args.dst), "merge DST")
    report = merge(Path(args.src), Path(args.dst))
    print(
        f"merged {args.src} into {args.dst}: {len(report.copied)} copied, {len(report.same)} already there, "
        f"{len(report.kept)} kept (the source failed), {len(report.conflicts)} conflicts"
    )
    for key in report.conflicts:
        print(f"  conflict: {key}: finished in both with different identities; kept {args.dst}'s")
    return 0


def _print_leaderboard(out_dir: Path, baseline: str | None, methods: list[str] | None = None) -> None:
    from .errors import GenrecError
    from .leaderboard import build_leaderboard

    try:
        board = build_leaderboard(out_dir, baseline=baseline, color=sys.stdout.isatty(), methods=methods)
    except GenrecError as exc:  # e.g. every cell failed: the run's own summary above says why
        print(f"no leaderboard: {exc}")
        return
    print(board.text.get("terminal", ""))
    written = ", ".join(str(p) for p in board.paths.values())
    if written:
        print(f"leaderboard files: {written}")


def cmd_plugins(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from .plugins import registry

    reg = registry(strict=args.strict or None)
    rows = []
    for info in reg.plugins.values():
        what = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in info.registered.items())
        rows.append([info.name, info.version or "-", what or ("FAILED: " + info.error if info.error else "-")])
    print(tabulate(rows, headers=["plugin", "version", "registers"], tablefmt="simple"))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from .config import load_benchmark
    from .data import load_dataset

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.benchmark:
        bench = load_benchmark(args.benchmark)
        specs = [(n, s, bench.where("datasets", n)) for n, s in bench.datasets.items()]
    else:
        specs = [(*_dataset_override(s), "") for s in (args.dataset or ["ml-100k"])]
    rows = []
    for name, spec, where in specs:
        stats = load_dataset(name, spec, cache, where=where).statistics()
        rows.append(
            [
                name,
                stats["users"],
                stats["items"],
                stats["interactions"],
                f"{stats['density']:.4%}",
                f"{stats['mean_length']:.2f}",
                stats["min_length"],
                stats["max_length"],
            ]
        )
    print(
        tabulate(
            rows,
            headers=["data set", "users", "items", "interactions", "density", "mean len.", "min len.", "max len."],
            intfmt=",",
            tablefmt="simple",
        )
    )
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from . import leaderboard

    return leaderboard.main(args)


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from . import scaffold

    return scaffold.main(args)


def _log_to_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("genrec_bench").addHandler(handler)
    _FILE_HANDLERS.append(handler)


def _log_error_to_files(message: str) -> None:
    """Write the error that ends the command to run.log (only there: stderr gets it from main)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "error: %s", (message,), None)
    for handler in _FILE_HANDLERS:
        handler.handle(record)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="genrec-bench", description="Benchmark generative recommenders.")
    parser.add_argument("--version", action="version", version=f"genrec-bench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a benchmark YAML (finished cells are skipped)")
    run.add_argument("benchmark", help="path of the benchmark YAML")
    run.add_argument("--results", help="results folder (default: results_dir in the YAML, else ./results)")
    run.add_argument("--cache-dir", help="cache folder (default: $GENREC_BENCH_CACHE or ~/.cache/genrec-bench)")
    run.add_argument("--device", help="auto, cpu or cuda (default: the YAML's device, else auto)")
    run.add_argument(
        "--dataset",
        action="append",
        metavar="SPEC",
        help="replace the data sets: a loader name (ml-100k) or NAME=LOADER:PATH; repeatable",
    )
    run.add_argument("--method", action="append", help="run only this method; repeatable")
    run.add_argument("--seeds", help="comma-separated seeds replacing the YAML's")
    run.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a YAML value, e.g. --set methods.sasrec.generator.epochs=5",
    )
    run.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="run cells in this process (default) or as Ray tasks sized by each method's resources",
    )
    run.add_argument("--address", help="Ray cluster address (default: a cluster already running, else a local one)")
    run.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch and subprocesses (default: "
        "$GENREC_BENCH_THREADS, else the available cores less other busy processes)",
    )
    run.add_argument("--rerun", action="store_true", help="run finished cells again")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print each cell and whether it would run or be skipped, and why; run nothing",
    )
    run.add_argument(
        "--max-minutes",
        metavar="M",
        help="start no cell that cannot finish within M minutes of the start (estimated from earlier "
        "runs); the others are reported as deferred",
    )
    run.add_argument(
        "--wait",
        action="store_true",
        help="wait for another run writing the same results folder to finish, instead of stopping",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--no-leaderboard", action="store_true", help="don't print the leaderboard at the end")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="list the cells of a results folder: ok, failed (why), missing")
    status.add_argument("results", help="a results folder (e.g. results) or one benchmark's folder in it")
    status.add_argument("benchmark", nargs="?", help="the benchmark YAML, to list the cells not run yet as missing")
    status.set_defaults(func=cmd_status)

    merge = sub.add_parser(
        "merge",
        help="copy the cells of results folder SRC into DST; never replaces a finished cell with another identity",
    )
    merge.add_argument("src", help="results folder to copy from (holding <benchmark>/ folders)")
    merge.add_argument("dst", help="results folder to copy into")
    merge.set_defaults(func=cmd_merge)

    plugins = sub.add_parser("plugins", help="list plugins, their versions and what they register")
    plugins.add_argument("--strict", action="store_true", help="fail on a broken plugin")
    plugins.set_defaults(func=cmd_plugins)

    datasets = sub.add_parser("datasets", help="print data-set statistics")
    datasets.add_argument("benchmark", nargs="?", help="a benchmark YAML whose data sets to describe")
    datasets.add_argument("--dataset", action="append", metavar="SPEC", help="a loader name or NAME=LOADER:PATH")
    datasets.add_argument("--cache-dir")
    datasets.set_defaults(func=cmd_datasets)

    board = sub.add_parser("leaderboard", help="tables with significance tests from a results folder")
    from .leaderboard import add_arguments as leaderboard_arguments

    leaderboard_arguments(board)
    board.set_defaults(func=cmd_leaderboard)

    new_plugin = sub.add_parser("new-plugin", help="write a ready plugin package: entry point, implementation, tests")
    from .scaffold import add_arguments as new_plugin_arguments

    new_plugin_arguments(new_plugin)
    new_plugin.set_defaults(func=cmd_new_plugin)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a one-line usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    from .errors import GenrecError

    try:
        return args.func(args)
    except GenrecError as exc:
        _log_error_to_files(str(exc))
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `genrec-bench status results | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a file system error outside any cell (cells record their own): one line
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        message = f"{where}{exc.strerror or exc}; check the paths given (--debug shows the traceback)"
        _log_error_to_files(message)
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        for handler in _FILE_HANDLERS:
            logging.getLogger("genrec_bench").removeHandler(handler)
            handler.close()
        _FILE_HANDLERS.clear()


if __name__ == "__main__":
    sys.exit(main())
