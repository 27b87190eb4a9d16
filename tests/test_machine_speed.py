"""Machine keys and the per-epoch speed ratio between two machines (result.json files written here)."""

from __future__ import annotations

import json

from genrec_bench import machine_speed, store


def _env(simd="AVX2", bf16=False, threads=1, model="AMD EPYC"):
    return {"cpu_model": model, "cpu_capability": simd, "cpu_bf16_units": bf16, "torch_threads": threads}


def _write(root, dataset, method, seed, environment, fit, epochs, precision=("fp32",)):
    cell = root / dataset / method / f"seed-{seed}"
    cell.mkdir(parents=True)
    result = {
        "status": "ok",
        "seconds": fit + 10.0,
        "timings": {"generator_fit": fit},
        "training": {"generator": {"epochs_run": epochs}},
        "precision": {"used": list(precision)},
        "environment": environment,
    }
    (cell / store.RESULT_FILE).write_text(json.dumps(result))


def test_one_model_name_with_other_simd_units_or_threads_is_another_machine():
    avx2 = machine_speed.of_result({"environment": _env()})
    assert avx2 != machine_speed.of_result({"environment": _env(simd="AVX512", bf16=True)})
    assert avx2 != machine_speed.of_result({"environment": _env(threads=2)})
    assert avx2 == machine_speed.of_result({"environment": _env()})
    assert machine_speed.of_result({}) is None
    assert machine_speed.describe(avx2) == "AMD EPYC, AVX2, 1 thread"
    assert machine_speed.describe(("cpu", "Xeon", "AVX512", True, 2)) == "Xeon, AVX512, bf16 units, 2 threads"
    gpu = machine_speed.of_result({"environment": {"device": "cuda:0", "device_name": "NVIDIA H100"}})
    assert machine_speed.describe(gpu) == "NVIDIA H100"


def test_the_ratio_is_the_median_over_data_sets_else_methods_of_the_same_precision_there(tmp_path):
    here, there = _env(), _env(simd="AVX512", bf16=True)
    ours, theirs = machine_speed.of_result({"environment": here}), machine_speed.of_result({"environment": there})
    # contrec: 2x on a, 4x on b, 5x on c -> median 4; seeds of one side are averaged first
    for dataset, slow in (("a", 20.0), ("b", 40.0), ("c", 50.0)):
        _write(tmp_path, dataset, "contrec", 0, there, 100.0, 10, precision=("bf16",))
        _write(tmp_path, dataset, "contrec", 1, here, slow * 6, 6)
    _write(tmp_path, "a", "sasrec", 0, there, 10.0, 10)
    _write(tmp_path, "a", "sasrec", 1, here, 15.0, 10)
    index = machine_speed.SpeedIndex([tmp_path])
    factor, basis = index.ratio("contrec", theirs, ours, ("bf16",))
    assert factor == 4.0 and basis == "contrec's training time per epoch on both, 3 data set(s)"
    # a method never run here: the methods that ran there in its precision stand in (bf16: contrec, not sasrec)
    factor, basis = index.ratio("deftrec", theirs, ours, ("bf16",))
    assert factor == 4.0 and basis == "training time per epoch on both of contrec, run there in bf16"
    factor, _ = index.ratio("tiger", theirs, ours, ("fp32",))
    assert factor == 1.5
    assert index.ratio("tiger", None, ours, ("fp32",)) is None  # nothing recorded as run on an unrecorded CPU
