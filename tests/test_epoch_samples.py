"""samples_per_epoch: a count, every pair, or a fraction of one pass over the data set's training pairs."""

from __future__ import annotations

import pytest

from genrec_bench.config import check_params
from genrec_bench.errors import ConfigError
from genrec_bench.training import check_samples_per_epoch, epoch_samples


def test_counts_fractions_and_null():
    assert epoch_samples(None, 5268) == 5268
    assert epoch_samples(960, 5268) == 960
    assert epoch_samples(960, 500) == 500  # capped at the pairs there are
    assert epoch_samples(0.25, 5268) == 1317  # a quarter pass: scales with the data set
    assert epoch_samples(0.25, 131_000) == 32_750
    assert epoch_samples(0.001, 10) == 1  # at least one sample


@pytest.mark.parametrize("bad", [0, -3, 0.0, 1.5, 2.0, True])
def test_bad_settings_name_the_field_and_the_fix(bad):
    with pytest.raises(ConfigError, match=r"tiger: samples_per_epoch must be .*fraction of a pass"):
        check_samples_per_epoch(bad, "tiger")


def test_the_plugins_accept_a_fraction_and_reject_a_bad_one():
    from plugins.dreamrec.generator import DreamRec
    from plugins.tiger.generator import Tiger

    check_params(Tiger, {"samples_per_epoch": 0.25}, "tiger.generator")
    assert Tiger(samples_per_epoch=0.25).samples_per_epoch == 0.25
    with pytest.raises(ConfigError, match="dreamrec: samples_per_epoch"):
        DreamRec(samples_per_epoch=1.5)
