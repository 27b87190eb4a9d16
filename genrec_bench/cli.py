"""The ``genrec-bench`` command. Heavy modules are imported inside the commands so ``--help`` stays fast."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("genrec_bench")


def default_cache_dir() -> Path:
    """``$GENREC_BENCH_CACHE``, else ``$XDG_CACHE_HOME/genrec-bench``, else ``~/.cache/genrec-bench``."""
    if os.environ.get("GENREC_BENCH_CACHE"):
        return Path(os.environ["GENREC_BENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "genrec-bench"


def _dataset_override(spec: str) -> tuple[str, dict]:
    """``ml-100k`` or ``NAME=LOADER:PATH`` (e.g. ``beauty=contrec:../shared/data/beauty``)."""
    if "=" not in spec:
        return spec, {}
    name, _, rest = spec.partition("=")
    loader, _, path = rest.partition(":")
    return name, ({"loader": loader, "path": path} if path else {"loader": loader})


def cmd_run(args: argparse.Namespace) -> int:
    from .config import load_benchmark
    from .environment import configure_threads
    from .runner import Runner

    choice = configure_threads(args.threads)  # before any parallel work; recorded in every result.json
    log.info("threads: %d (%s; %d cores available, %d other busy)", choice.threads, choice.source,
             choice.cpus_available, choice.busy_others)
    overrides = list(args.set or [])
    bench = load_benchmark(args.benchmark, overrides)
    if args.dataset:
        bench.datasets = dict(_dataset_override(s) for s in args.dataset)
    if args.seeds:
        bench.seeds = [int(s) for s in args.seeds.split(",")]
    results = Path(args.results or bench.raw.get("results_dir") or "results")
    cache = Path(args.cache_dir or bench.raw.get("cache_dir") or default_cache_dir())
    _log_to_file(results / bench.name / "run.log")
    runner = Runner(bench, results, cache, args.device, show_progress=not args.no_progress, rerun=args.rerun,
                    methods=args.method, executor=args.executor, address=args.address)
    outcomes = runner.run()
    failed = [o for o in outcomes if o.status == "failed"]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed")}
    print(f"\n{len(outcomes)} cells: {counts['ok']} run, {counts['skipped']} skipped (finished earlier), "
          f"{counts['failed']} failed; results in {runner.out_dir}")
    for outcome in failed:
        print(f"  failed: {outcome.cell.relative_dir()}: {outcome.error}")
    if not args.no_leaderboard:
        _print_leaderboard(runner.out_dir, bench.baseline)
    return 1 if failed else 0


def _print_leaderboard(out_dir: Path, baseline: str | None) -> None:
    from .errors import GenrecError
    from .leaderboard import build_leaderboard

    try:
        board = build_leaderboard(out_dir, baseline=baseline, color=sys.stdout.isatty())
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
        rows.append([name, stats["users"], stats["items"], stats["interactions"], f"{stats['density']:.4%}",
                     f"{stats['mean_length']:.2f}", stats["min_length"], stats["max_length"]])
    print(tabulate(rows, headers=["data set", "users", "items", "interactions", "density", "mean len.",
                                  "min len.", "max len."], intfmt=",", tablefmt="simple"))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genrec-bench", description="Benchmark generative recommenders.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a benchmark YAML (finished cells are skipped)")
    run.add_argument("benchmark", help="path of the benchmark YAML")
    run.add_argument("--results", help="results folder (default: results_dir in the YAML, else ./results)")
    run.add_argument("--cache-dir", help="cache folder (default: $GENREC_BENCH_CACHE or ~/.cache/genrec-bench)")
    run.add_argument("--device", help="auto, cpu or cuda (default: the YAML's device, else auto)")
    run.add_argument("--dataset", action="append", metavar="SPEC",
                     help="replace the data sets: a loader name (ml-100k) or NAME=LOADER:PATH; repeatable")
    run.add_argument("--method", action="append", help="run only this method; repeatable")
    run.add_argument("--seeds", help="comma-separated seeds replacing the YAML's")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a YAML value, e.g. --set methods.sasrec.generator.epochs=5")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="run cells in this process (default) or as Ray tasks sized by each method's resources")
    run.add_argument("--address", help="Ray cluster address (default: a cluster already running, else a local one)")
    run.add_argument("--threads", type=int, help="CPU threads for torch and subprocesses (default: "
                     "$GENREC_BENCH_THREADS, else the available cores less other busy processes)")
    run.add_argument("--rerun", action="store_true", help="run finished cells again")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--no-leaderboard", action="store_true", help="don't print the leaderboard at the end")
    run.set_defaults(func=cmd_run)

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
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from .errors import GenrecError

    try:
        return args.func(args)
    except GenrecError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
