"""The evaluation protocol of a benchmark file: its keys, their defaults and checks, and per-data-set values."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from .errors import ConfigError

#: ``where(*keys)`` -> "file:line: a.b.c" for an error message (``Benchmark.where``)
Where = Callable[..., str]

DEFAULT_PROTOCOL: dict[str, Any] = {
    "split": "leave-one-out",  # last item test, second-last validation, chronological
    "max_history": 20,  # items of history a model sees
    "exclude_history": True,  # history items are never recommended
    "ks": [5, 10, 20],
    "metrics": ["recall", "ndcg", "mrr", "hr"],
    "valid_metric": "ndcg@10",  # early stopping
    "valid_users": None,  # validate on a fixed random subset of this many users (None: all)
    "eval_memory_mb": 256,  # bound on one score matrix during evaluation
    "precision": "auto",  # auto | fp32 | bf16: autocast (genrec_bench.context.resolve_precision)
    "convergence_tolerance": 0.02,  # relative gain still a plateau (genrec_bench.convergence)
}
#: protocol keys that change how results are read, not how they are made: left out of a cell's identity
READING_KEYS = ("convergence_tolerance",)
#: protocol keys a data set may set for itself under ``protocol.per_dataset`` (how its cells select, not what the
#: leaderboard reads: metrics and cut-offs stay one for the whole file so that its columns compare)
PER_DATASET_PROTOCOL_KEYS = ("valid_users",)


def first_duplicate(values: list[Any]) -> Any:
    """The first value seen twice in ``values`` (linear time), else None."""
    seen = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def check_dataset_in_file(dataset: Any, names: list[str], where: str) -> None:
    """Raise ConfigError unless ``dataset`` is one of the file's data sets (a ``per_dataset`` key)."""
    if str(dataset) not in names:
        raise ConfigError(
            f"{where}: '{dataset}' is not one of the data sets ({', '.join(names)}); name a data set of this file"
        )


def _check_valid_users(users: Any, where: str) -> None:
    if users is not None and (isinstance(users, bool) or not isinstance(users, int) or users < 1):
        raise ConfigError(f"{where}: expected a positive integer or null (all users), got {users!r}")


def check_protocol_per_dataset(per_dataset: Any, names: list[str], where_in: Where) -> dict[str, dict[str, Any]]:
    """Validate ``protocol.per_dataset``: data sets of this file, each with keys of PER_DATASET_PROTOCOL_KEYS."""
    if per_dataset is None:
        return {}
    where = functools.partial(where_in, "protocol", "per_dataset")
    if not isinstance(per_dataset, dict) or not per_dataset:
        raise ConfigError(
            f"{where()}: expected a mapping 'data set: {{valid_users: N}}', e.g. beauty: {{valid_users: 2000}}"
        )
    checked = {}
    for dataset, values in per_dataset.items():
        check_dataset_in_file(dataset, names, where(str(dataset)))
        if not isinstance(values, dict) or not values:
            raise ConfigError(f"{where(str(dataset))}: expected a mapping such as {{valid_users: 2000}}")
        for key in values:
            if key not in PER_DATASET_PROTOCOL_KEYS:
                raise ConfigError(
                    f"{where(str(dataset), str(key))}: not settable per data set; a data set may set "
                    f"{', '.join(PER_DATASET_PROTOCOL_KEYS)} (the others stay one for the whole file)"
                )
        if "valid_users" in values:
            _check_valid_users(values["valid_users"], where(str(dataset), "valid_users"))
        checked[str(dataset)] = dict(values)
    return checked


def check_protocol(protocol: dict[str, Any], where: Where) -> None:
    """Reject a protocol value of the wrong type or range, naming its YAML line."""
    ks = protocol["ks"]
    if not isinstance(ks, list) or not ks or not all(isinstance(k, int) and k > 0 for k in ks):
        raise ConfigError(f"{where('protocol', 'ks')}: expected a list of positive integers, got {ks!r}")
    if not isinstance(protocol["max_history"], int) or protocol["max_history"] < 1:
        raise ConfigError(f"{where('protocol', 'max_history')}: expected a positive integer")
    if not isinstance(protocol["exclude_history"], bool):
        raise ConfigError(f"{where('protocol', 'exclude_history')}: expected true or false")
    if protocol["split"] != "leave-one-out":
        raise ConfigError(f"{where('protocol', 'split')}: only 'leave-one-out' is implemented")
    metrics = protocol["metrics"]
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise ConfigError(f"{where('protocol', 'metrics')}: expected a list of metric names, got {metrics!r}")
    for key, values in (("ks", ks), ("metrics", metrics)):
        twice = first_duplicate(values)
        if twice is not None:
            raise ConfigError(f"{where('protocol', key)}: {twice!r} is listed twice; list each once")
    _check_valid_users(protocol["valid_users"], where("protocol", "valid_users"))
    memory = protocol["eval_memory_mb"]
    if isinstance(memory, bool) or not isinstance(memory, (int, float)) or not math.isfinite(memory) or memory <= 0:
        raise ConfigError(f"{where('protocol', 'eval_memory_mb')}: expected a positive number of MB, got {memory!r}")
    metric, _, k = str(protocol["valid_metric"]).partition("@")
    if not k.isdigit() or int(k) < 1 or not metric:
        raise ConfigError(
            f"{where('protocol', 'valid_metric')}: expected '<metric>@<k>' (e.g. ndcg@10), "
            f"got {protocol['valid_metric']!r}"
        )
    if protocol["precision"] not in ("auto", "fp32", "bf16"):
        raise ConfigError(
            f"{where('protocol', 'precision')}: expected auto, fp32 or bf16, got {protocol['precision']!r}"
        )
    tol = protocol["convergence_tolerance"]
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 1:
        raise ConfigError(
            f"{where('protocol', 'convergence_tolerance')}: expected a relative gain in [0, 1), e.g. 0.02, got {tol!r}"
        )
    # Whether the metric is known and listed in protocol.metrics is checked with the plugins loaded
    # (runner.validate_cells), so that a misspelt name in protocol.metrics is blamed there.
