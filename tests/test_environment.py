"""Seeding and deterministic kernels for every cell."""

import torch

from genrec_bench.environment import DETERMINISTIC_ENV, describe, seed_everything


def test_cells_use_deterministic_kernels_unless_switched_off(monkeypatch):
    try:
        monkeypatch.delenv(DETERMINISTIC_ENV, raising=False)
        seed_everything(0)
        assert torch.are_deterministic_algorithms_enabled()
        assert describe(torch.device("cpu"))["deterministic"] is True
        first = torch.rand(3)
        seed_everything(0)
        assert torch.equal(first, torch.rand(3))
        monkeypatch.setenv(DETERMINISTIC_ENV, "0")
        seed_everything(0)
        assert not torch.are_deterministic_algorithms_enabled()
        assert describe(torch.device("cpu"))["deterministic"] is False
    finally:
        monkeypatch.delenv(DETERMINISTIC_ENV, raising=False)
        seed_everything(0)


def test_describe_records_the_cpu_that_timings_and_precision_depend_on():
    from genrec_bench.context import cpu_has_bf16_units

    info = describe(torch.device("cpu"))
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["cpu_bf16_units"] is cpu_has_bf16_units()
