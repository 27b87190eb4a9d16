"""A method's variants: swept values (``sweep``, one cell per value) and per-data-set profiles (``per_dataset``).

``sweep: {generator.hidden: [64, 128]}`` makes one cell per value, labelled ``method@hidden=64``.
``per_dataset: {beauty: {generator.hidden: 128}}`` sets parameters on one data set only, for example the profile
that data set's validation split chose: the cell keeps the method's name, its ``config.yaml`` and identity hold
the values it ran with, and the method's cells on other data sets keep theirs (nothing there runs again).
"""

from __future__ import annotations

import copy
from typing import Any

from .config import COMPONENTS, NAME_MAX, VALUE_RE, check_name
from .errors import ConfigError
from .protocol import Where, check_dataset_in_file


def _check_key(key: Any, where: str, what: str) -> tuple[str, str]:
    component, dot, param = str(key).partition(".")
    if component not in COMPONENTS or not dot:
        raise ConfigError(f"{where}: {what} keys look like 'generator.hidden' (a component, a dot, a parameter)")
    check_name(param, where, what.rstrip("s") + " parameter")
    return component, param


def check_sweep(sweep: Any, where: Where) -> dict[str, list[Any]]:
    """Validate ``sweep``: dotted keys, non-empty lists of values that can be part of a folder name."""
    sweep = sweep or {}
    if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
        raise ConfigError(f"{where('sweep')}: expected a mapping 'component.param: [value, ...]'")
    for key, values in sweep.items():
        key_where = where("sweep", str(key))
        _check_key(key, key_where, "sweep")
        for value in values:
            text = str(value)
            if (
                isinstance(value, (dict, list))
                or value is None
                or not VALUE_RE.fullmatch(text)
                or ".." in text
                or len(text) > NAME_MAX
            ):
                raise ConfigError(
                    f"{key_where}: swept value {value!r} is not allowed; each value becomes part "
                    "of a folder name: use numbers, booleans or strings of letters, digits, _ . + -"
                )
    return sweep


def check_per_dataset(
    per_dataset: Any, where: Where, datasets: list[str], swept: dict[str, list[Any]]
) -> dict[str, dict[str, Any]]:
    """Validate ``per_dataset``: data set names of this file, each with dotted ``component.param: value`` keys."""
    per_dataset = per_dataset or {}
    if not isinstance(per_dataset, dict):
        raise ConfigError(f"{where('per_dataset')}: expected a mapping 'data set: {{component.param: value}}'")
    for dataset, values in per_dataset.items():
        ds_where = where("per_dataset", str(dataset))
        check_dataset_in_file(dataset, datasets, ds_where)
        if not isinstance(values, dict) or not values:
            raise ConfigError(f"{ds_where}: expected a mapping 'component.param: value', e.g. generator.hidden: 128")
        for key in values:
            _check_key(key, where("per_dataset", str(dataset), str(key)), "per_dataset")
            if key in swept:
                raise ConfigError(
                    f"{where('per_dataset', str(dataset), str(key))}: '{key}' is also swept; "
                    "set it per data set or sweep it, not both"
                )
    return {str(d): dict(v) for d, v in per_dataset.items()}


def _set(components: dict[str, dict[str, Any]], key: str, value: Any) -> None:
    component, param = key.split(".", 1)
    components[component][param] = copy.deepcopy(value)


def method_variants(
    method: dict[str, Any], dataset: str
) -> tuple[dict[str, Any], list[tuple[str, dict[str, dict[str, Any]]]]]:
    """The method's profile on ``dataset`` (its ``per_dataset`` values there) and the ``(label suffix,
    components)`` of every cell it makes there: the profile applied, then each combination of swept values."""
    base = copy.deepcopy({c: method[c] for c in COMPONENTS})
    profile = dict((method.get("per_dataset") or {}).get(dataset, {}))
    for key, value in profile.items():
        _set(base, key, value)
    sweep = method.get("sweep") or {}
    combos: list[dict[str, Any]] = [{}]
    for key, values in sweep.items():
        combos = [{**combo, key: value} for combo in combos for value in values]
    out = []
    for combo in combos:
        components = copy.deepcopy(base)
        for key, value in combo.items():
            _set(components, key, value)
        suffix = "@" + ",".join(f"{k.split('.', 1)[1]}={v}" for k, v in combo.items()) if combo else ""
        out.append((suffix, components))
    return profile, out
