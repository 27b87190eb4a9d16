"""RecBole model names and parameters from the benchmark YAML: checked, then turned into a RecBole Config."""

from __future__ import annotations

import difflib
import inspect
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import yaml

from genrec_bench.errors import ConfigError

from .compat import quiet_recbole
from .data import DATASET_NAME

#: Keys that genrec-bench's protocol or this plugin decides, with where to set them instead.
OWNED = {
    "MAX_ITEM_LIST_LENGTH": "protocol.max_history (the history cap every method shares)",
    "eval_args": "protocol.split (genrec-bench splits, RecBole never does)",
    "metrics": "protocol.metrics",
    "topk": "protocol.ks",
    "valid_metric": "protocol.valid_metric",
    "valid_metric_bigger": "protocol.valid_metric",
    "repeatable": "the protocol (sequential models need True)",
    "eval_batch_size": "protocol.eval_memory_mb",
    "seed": "seeds: in the benchmark file",
    "reproducibility": "seeds: in the benchmark file",
    "gpu_id": "--device or device:",
    "use_gpu": "--device or device:",
    "device": "--device or device:",
    "data_path": "datasets: (the plugin writes the split for RecBole)",
    "dataset": "datasets:",
    "benchmark_filename": "datasets:",
    "load_col": "datasets:",
    "unload_col": "datasets:",
    "rm_dup_inter": "the data set's dedup option",
    "val_interval": "the data set's min_rating option",
    "user_inter_num_interval": "the data set's k_core option",
    "item_inter_num_interval": "the data set's k_core option",
    "filter_inter_by_user_or_item": "datasets:",
    "USER_ID_FIELD": "the plugin",
    "ITEM_ID_FIELD": "the plugin",
    "checkpoint_dir": "nothing: best weights are kept in memory",
    "save_dataset": "nothing",
    "save_dataloaders": "nothing",
    "show_progress": "the CLI's progress bars",
    "log_wandb": "nothing: results go to results/",
}
#: What the plugin passes to every Config: its own data folder, no filtering, no re-splitting.
DATA_CONFIG = {
    "load_col": None,
    "filter_inter_by_user_or_item": False,
    "rm_dup_inter": None,
    "val_interval": None,
    "user_inter_num_interval": "[0,inf)",
    "item_inter_num_interval": "[0,inf)",
    "benchmark_filename": None,
    "show_progress": False,
    "save_dataset": False,
    "log_wandb": False,
    "state": "WARNING",
    "use_gpu": False,
}
LEARNERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "sparse_adam": torch.optim.SparseAdam,
}
_CONFIG_READ = re.compile(r"config\[\s*[\"'](\w+)[\"']\s*\]")


def sequential_models(rb: SimpleNamespace) -> list[str]:
    import recbole.model.sequential_recommender as seq

    return sorted(
        name
        for name, obj in vars(seq).items()
        if inspect.isclass(obj) and getattr(obj, "type", None) == rb.ModelType.SEQUENTIAL
    )


def resolve_model(rb: SimpleNamespace, name: str, where: str) -> type:
    """The RecBole model class; ConfigError for an unknown or non-sequential model."""
    known = sequential_models(rb)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1) or [k for k in known if k.lower() == name.lower()]
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"{where}.model: '{name}' is not a RecBole sequential model; {hint}known: {', '.join(known)}")
    return rb.get_model(name)


def _properties() -> Path:
    import recbole

    return Path(recbole.__file__).parent / "properties"


def model_defaults(name: str) -> dict[str, Any]:
    """The model's own YAML defaults shipped with RecBole."""
    path = _properties() / "model" / f"{name}.yaml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


def known_keys(name: str, model_class: type) -> set[str]:
    """Every setting RecBole reads for this model: its YAML files plus ``config["..."]`` in its source."""
    from recbole.utils import argument_list

    props = _properties()
    keys = set(model_defaults(name))
    for file in ("overall.yaml", "dataset/sample.yaml", "quick_start_config/sequential.yaml"):
        keys |= set(yaml.safe_load((props / file).read_text(encoding="utf-8")) or {})
    for group in ("general_arguments", "training_arguments", "evaluation_arguments", "dataset_arguments"):
        keys |= set(getattr(argument_list, group, []))
    for cls in inspect.getmro(model_class):
        if cls.__module__.startswith("recbole."):
            try:
                keys |= set(_CONFIG_READ.findall(inspect.getsource(cls)))
            except (OSError, TypeError):
                pass
    return keys


def check_settings(name: str, model_class: type, params: dict[str, Any], where: str) -> None:
    """ConfigError for a setting genrec-bench owns, a setting RecBole does not know, or a bad learner."""
    known = known_keys(name, model_class)
    for key in params:
        if key in OWNED:
            raise ConfigError(f"{where}.config.{key}: set by genrec-bench, not per model; use {OWNED[key]}")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(
                f"{where}.config.{key}: RecBole's {name} has no such setting; {hint}"
                f"see recbole/properties/model/{name}.yaml"
            )
    learner = str(params.get("learner", "adam")).lower()
    if learner not in LEARNERS:
        raise ConfigError(f"{where}.config.learner: unknown optimizer '{learner}'; known: {', '.join(LEARNERS)}")


def build_config(
    rb: SimpleNamespace,
    name: str,
    params: dict[str, Any],
    data_path: Path,
    max_len: int,
    device: torch.device,
    where: str,
) -> Any:
    """A RecBole Config over the plugin's data folder; RecBole's own errors become ConfigError."""
    settings = dict(params)
    loss = settings.get("loss_type", model_defaults(name).get("loss_type"))
    if loss == "CE" and "train_neg_sample_args" not in settings:
        settings["train_neg_sample_args"] = None  # RecBole refuses negatives with a CE loss
    settings.update(DATA_CONFIG, data_path=str(data_path), MAX_ITEM_LIST_LENGTH=int(max_len))
    try:
        with quiet_recbole():
            config = rb.Config(model=name, dataset=DATASET_NAME, config_dict=settings)
    except Exception as exc:
        raise ConfigError(
            f"{where}.config: RecBole rejected the settings for {name} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    config["device"] = device
    return config
