"""Benchmark YAML: load, validate (errors name the file, line and field), expand into cells."""
from __future__ import annotations

import copy
import inspect
import itertools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ConfigError

COMPONENTS = ("tokenizer", "generator", "retriever")

DEFAULT_PROTOCOL: dict[str, Any] = {
    "split": "leave-one-out",  # last item test, second-last validation, chronological
    "max_history": 20,  # items of history a model sees
    "exclude_history": True,  # history items are never recommended
    "ks": [5, 10, 20],
    "metrics": ["recall", "ndcg", "mrr", "hr"],
    "valid_metric": "ndcg@10",  # early stopping
    "valid_users": None,  # validate on a fixed random subset of this many users (None: all)
    "eval_memory_mb": 256,  # bound on one score matrix during evaluation
}
TOP_LEVEL = {"name": str, "description": str, "plugins": list, "seeds": (list, int), "device": str,
             "cache_dir": str, "results_dir": str, "protocol": dict, "baseline": str, "datasets": dict,
             "methods": dict, "leaderboard": dict}
METHOD_KEYS = {*COMPONENTS, "sweep", "resources", "description"}


@dataclass
class Benchmark:
    name: str
    path: Path
    raw: dict[str, Any]
    protocol: dict[str, Any]
    seeds: list[int]
    datasets: dict[str, dict[str, Any]]
    methods: dict[str, dict[str, Any]]
    baseline: str | None = None
    device: str = "auto"
    plugins: list[str] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)

    def where(self, *keys: str) -> str:
        """``file:line: a.b.c`` for error messages (the line of the deepest key that exists)."""
        for n in range(len(keys), 0, -1):
            line = self.lines.get(".".join(keys[:n]))
            if line:
                return f"{self.path}:{line}: {'.'.join(keys)}"
        return f"{self.path}: {'.'.join(keys)}"


@dataclass
class Cell:
    """One unit of work: a data set x method (with swept values) x seed."""

    benchmark: str
    dataset: str
    dataset_spec: dict[str, Any]
    method: str  # label, with swept values, e.g. "sasrec@hidden=64"
    components: dict[str, dict[str, Any]]  # tokenizer/generator/retriever -> {"name": ..., **params}
    seed: int
    protocol: dict[str, Any]

    def relative_dir(self) -> Path:
        return Path(self.dataset) / self.method / f"seed-{self.seed}"

    def resolved(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "dataset": {"name": self.dataset, **self.dataset_spec},
                "method": {"name": self.method, **self.components}, "seed": self.seed, "protocol": self.protocol}


def _line_map(node: yaml.Node, prefix: str = "", out: dict[str, int] | None = None) -> dict[str, int]:
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            out[path] = key.start_mark.line + 1
            _line_map(value, path, out)
    return out


def _component(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return dict(value)
    raise ConfigError(f"{where}: expected a plugin name or a mapping with 'name' and its parameters, "
                      f"got {value!r}")


def load_benchmark(path: str | Path, overrides: list[str] | None = None) -> Benchmark:
    """Read and validate a benchmark file; ``overrides`` are ``dotted.key=value`` strings (value is YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: benchmark file not found; give the path of a YAML file (see benchmarks/)")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        location = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{location}: malformed YAML ({problem}); check indentation and quoting") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a benchmark must be a YAML mapping with 'datasets' and 'methods'")
    lines = _line_map(node) if node is not None else {}
    for override in overrides or []:
        _apply_override(raw, override, path)
    bench = Benchmark(name=str(raw.get("name") or path.stem), path=path, raw=raw, protocol={}, seeds=[],
                      datasets={}, methods={}, lines=lines)
    for key, value in raw.items():
        if key not in TOP_LEVEL:
            raise ConfigError(f"{bench.where(key)}: unknown top-level key; known: {', '.join(sorted(TOP_LEVEL))}")
        if value is not None and not isinstance(value, TOP_LEVEL[key]):
            expected = TOP_LEVEL[key]
            names = " or ".join(t.__name__ for t in expected) if isinstance(expected, tuple) else expected.__name__
            raise ConfigError(f"{bench.where(key)}: expected {names}, got {type(value).__name__}")
    for key in ("datasets", "methods"):
        if not raw.get(key):
            raise ConfigError(f"{path}: '{key}' is missing or empty; name at least one (see benchmarks/quick.yaml)")
    protocol = copy.deepcopy(DEFAULT_PROTOCOL)
    for key, value in (raw.get("protocol") or {}).items():
        if key not in DEFAULT_PROTOCOL:
            raise ConfigError(f"{bench.where('protocol', key)}: unknown protocol key; known: "
                              f"{', '.join(DEFAULT_PROTOCOL)}")
        protocol[key] = value
    _check_protocol(protocol, bench)
    bench.protocol = protocol
    seeds = raw.get("seeds", [0])
    seeds = [seeds] if isinstance(seeds, int) else seeds
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{bench.where('seeds')}: seeds must be a list of integers, got {seeds!r}")
    bench.seeds = seeds
    for name, spec in raw["datasets"].items():
        spec = {} if spec is None else spec
        if not isinstance(spec, dict):
            raise ConfigError(f"{bench.where('datasets', str(name))}: expected a mapping (loader, path, ...), "
                              f"got {type(spec).__name__}")
        bench.datasets[str(name)] = spec
    for name, spec in raw["methods"].items():
        where = bench.where("methods", str(name))
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a mapping with tokenizer, generator and retriever")
        unknown = set(spec) - METHOD_KEYS
        if unknown:
            raise ConfigError(f"{bench.where('methods', str(name), sorted(unknown)[0])}: unknown key; "
                              f"a method has {', '.join(sorted(METHOD_KEYS))}")
        method = {}
        for component in COMPONENTS:
            if component not in spec:
                raise ConfigError(f"{where}: missing '{component}' (a method names a tokenizer, generator and retriever)")
            method[component] = _component(spec[component], bench.where("methods", str(name), component))
        sweep = spec.get("sweep") or {}
        if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
            raise ConfigError(f"{bench.where('methods', str(name), 'sweep')}: expected a mapping "
                              "'component.param: [value, ...]'")
        for key in sweep:
            if str(key).split(".")[0] not in COMPONENTS or "." not in str(key):
                raise ConfigError(f"{bench.where('methods', str(name), 'sweep', str(key))}: sweep keys look like "
                                  "'generator.hidden'")
        method["sweep"] = sweep
        method["resources"] = spec.get("resources") or {}
        bench.methods[str(name)] = method
    bench.baseline = raw.get("baseline")
    if bench.baseline is not None and bench.baseline not in bench.methods:
        raise ConfigError(f"{bench.where('baseline')}: '{bench.baseline}' is not one of the methods "
                          f"({', '.join(bench.methods)})")
    bench.device = str(raw.get("device") or "auto")
    bench.plugins = list(raw.get("plugins") or [])
    return bench


def _check_protocol(protocol: dict[str, Any], bench: Benchmark) -> None:
    ks = protocol["ks"]
    if not isinstance(ks, list) or not ks or not all(isinstance(k, int) and k > 0 for k in ks):
        raise ConfigError(f"{bench.where('protocol', 'ks')}: expected a list of positive integers, got {ks!r}")
    if not isinstance(protocol["max_history"], int) or protocol["max_history"] < 1:
        raise ConfigError(f"{bench.where('protocol', 'max_history')}: expected a positive integer")
    if not isinstance(protocol["exclude_history"], bool):
        raise ConfigError(f"{bench.where('protocol', 'exclude_history')}: expected true or false")
    if protocol["split"] != "leave-one-out":
        raise ConfigError(f"{bench.where('protocol', 'split')}: only 'leave-one-out' is implemented")
    metric, _, k = str(protocol["valid_metric"]).partition("@")
    if not k.isdigit() or metric not in protocol["metrics"]:
        raise ConfigError(f"{bench.where('protocol', 'valid_metric')}: expected '<metric>@<k>' with a metric from "
                          f"protocol.metrics, got {protocol['valid_metric']!r}")


def _apply_override(raw: dict, override: str, path: Path) -> None:
    key, sep, value = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected 'dotted.key=value'")
    target = raw
    parts = key.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {override!r}: '{part}' in {path} is not a mapping")
    target[parts[-1]] = yaml.safe_load(value)


def expand_cells(bench: Benchmark) -> list[Cell]:
    """Data sets x methods x swept values x seeds, in a stable order."""
    cells = []
    for dataset, spec in bench.datasets.items():
        for name, method in bench.methods.items():
            sweep = method["sweep"]
            keys = list(sweep)
            for values in itertools.product(*(sweep[k] for k in keys)) if keys else [()]:
                components = copy.deepcopy({c: method[c] for c in COMPONENTS})
                for key, value in zip(keys, values):
                    component, param = key.split(".", 1)
                    components[component][param] = value
                label = name if not keys else name + "@" + ",".join(
                    f"{k.split('.', 1)[1]}={v}" for k, v in zip(keys, values))
                for seed in bench.seeds:
                    cells.append(Cell(bench.name, dataset, spec, label, components, seed, bench.protocol))
    return cells


# --- Building plugin objects from YAML parameters, with their signature as the schema ---------------

def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation in (inspect.Parameter.empty, Any):
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is not None:
        annotation = origin
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def instantiate(factory: Callable[..., Any], params: dict[str, Any], where: str) -> Any:
    """Call ``factory(**params)`` after checking names and types against its signature."""
    check_params(factory, params, where)
    return factory(**params)


def check_params(factory: Callable[..., Any], params: dict[str, Any], where: str) -> None:
    """Raise ConfigError for an unknown, missing or wrongly typed parameter of ``factory``."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    signature = inspect.signature(factory)
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    known = [n for n, p in signature.parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    for key, value in params.items():
        if key not in signature.parameters and not accepts_any:
            raise ConfigError(f"{where}: unknown parameter '{key}'; known: {', '.join(known) or 'none'}")
        annotation = hints.get(key, inspect.Parameter.empty)
        if key in signature.parameters and not _type_ok(value, annotation):
            raise ConfigError(f"{where}.{key}: expected {_type_name(annotation)}, got {value!r} "
                              f"({type(value).__name__})")
    missing = [n for n, p in signature.parameters.items()
               if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n not in params]
    if missing:
        raise ConfigError(f"{where}: missing required parameter '{missing[0]}'")
