"""Training records and the convergence rule: closed-form cases, and what a run writes to result.json."""

import json

import pytest
import torch
from conftest import write_benchmark

from genrec_bench.config import load_benchmark
from genrec_bench.context import resolve_precision
from genrec_bench.convergence import assess, budget_text, is_converged, recent_gain, stop_label
from genrec_bench.runner import Runner
from genrec_bench.training import EarlyStopping, loss_record, training_summary


def _record(rule: str, values: list[float], patience: int = 2) -> dict:
    curve = list(enumerate(values, start=1))
    return training_summary(rule, [{"epoch": e, "valid": v} for e, v in curve], 1, patience, len(values))


def test_patience_is_converged_whatever_the_curve():
    assert is_converged(_record("patience", [0.1, 0.5, 0.4, 0.3]))


def test_cap_while_rising_is_not_converged():
    record = _record("epoch_cap", [0.10, 0.20, 0.30, 0.40])
    assert recent_gain(record) == pytest.approx((0.40 - 0.20) / 0.20)
    assert not is_converged(record) and stop_label(assess(record)) == "epoch cap, improving"


def test_cap_on_a_plateau_within_tolerance_is_converged():
    # the last 2 validations gain 1% over the best before them: within 2%, not within 0.5%
    record = _record("epoch_cap", [0.10, 0.200, 0.199, 0.202])
    assert is_converged(record, tolerance=0.02) and not is_converged(record, tolerance=0.005)
    assert stop_label(assess(record, 0.02)) == "epoch cap (plateau)"


def test_too_few_validations_to_tell_is_not_converged():
    assert not is_converged(_record("epoch_cap", [0.1, 0.2], patience=2))
    assert not is_converged(_record("no_validation", []))


def test_loss_curve_plateau_for_runs_without_validation():
    falling = loss_record([1.0 / (e + 1) for e in range(40)])
    flat = loss_record([1.0 + 0.5 * 0.5**e for e in range(40)])
    assert not is_converged(falling) and is_converged(flat)
    assert len(loss_record(list(range(500, 0, -1)))["loss_curve"]) == 50


def test_early_stopping_summary_names_the_rule_and_counts():
    scores = iter([0.1, 0.3, 0.2, 0.25])
    stopper = EarlyStopping(torch.nn.Linear(1, 1), lambda: {"m": next(scores)}, patience=2, epochs=10)
    for epoch in range(1, 5):
        if stopper.update(epoch, {"epoch": epoch, "loss": 1.0, "samples": 100, "steps": 4}):
            break
    summary = stopper.summary()
    assert summary["stop_rule"] == "patience" and summary["best_epoch"] == 2
    assert summary["valid_curve"] == [[1, 0.1], [2, 0.3], [3, 0.2], [4, 0.25]]
    assert summary["samples"] == 400 and summary["steps"] == 16
    assert budget_text(summary) == "4 epochs, 400 samples, 16 steps"
    assert EarlyStopping(torch.nn.Linear(1, 1), dict, 3).summary("time_cap")["stop_rule"] == "time_cap"


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu, True) is None
    assert resolve_precision("bf16", cpu, False) is torch.bfloat16
    assert resolve_precision("auto", cpu, False) is None  # a path not measured faster stays in fp32
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", cpu, True)


def test_result_json_carries_the_training_record_and_precision(tmp_path, tiny_atomic):
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic)
    Runner(load_benchmark(bench), tmp_path / "r", tmp_path / "c", "cpu", show_progress=False).run()
    cells = tmp_path / "r" / "tiny" / "tiny"
    sasrec = json.loads((cells / "sasrec" / "seed-0" / "result.json").read_text())
    record = sasrec["training"]["generator"]
    assert record["stop_rule"] in ("patience", "epoch_cap") and record["epochs_cap"] == 3
    assert len(record["valid_curve"]) == record["epochs_run"] and record["samples"] > 0 and record["steps"] > 0
    assert record["converged"] == is_converged(record, 0.02) and record["tolerance"] == 0.02
    assert sasrec["precision"] == {"setting": "auto", "used": ["fp32"]}
    popularity = json.loads((cells / "popularity" / "seed-0" / "result.json").read_text())
    assert popularity["training"] == {"tokenizer": None, "generator": None}
    from genrec_bench.status import status_lines

    lines = status_lines(tmp_path / "r")[0]
    assert any("popularity" in line and "[not trained]" in line for line in lines)
    sasrec_line = next(line for line in lines if "sasrec" in line)
    assert f"best epoch {record['best_epoch']}/{record['epochs_run']}]" in sasrec_line


def test_bad_precision_is_a_one_line_config_error(tmp_path, tiny_atomic):
    from genrec_bench.errors import ConfigError

    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic)
    bench.write_text(bench.read_text().replace("max_history: 8}", "max_history: 8, precision: half}"))
    with pytest.raises(ConfigError, match="precision: expected auto, fp32 or bf16"):
        load_benchmark(bench)
