"""`scripts/benchmark.py` (the figures of docs/performance.md): a case reports its throughput and,
with `--floor`, both floors (the loss alone, and with clipping and the optimizer)."""

import math
import os
import sys

import pytest

from conftest import ROOT, load_config
from wscrl_jax.train.loop import steps_per_epoch

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import benchmark  # noqa: E402


def test_md_case_reports_steps_and_both_floors():
    """One MD-CRL case with both floors: the fields describe the case that ran (whole epochs a
    call, `training.steps_per_call` steps' worth, every member), and the floors, which do a
    subset of a training step's work, run at a rate of the step's order. The calls last
    milliseconds, so the bound leaves a factor 10 for a loaded machine; a floor that timed its
    own compilation (about a second) would be far below it. The epochs with their epoch ends
    (validation) run slower than their steps alone."""
    members, calls = 2, 2
    result = benchmark.bench_md_case("linear+none", z_dim=4, num_domains=2, members=members,
                                     calls=calls, floor=True)
    config = load_config("md_mixing", "linear,none")
    n_train = config.data.num_samples.train - config.data.num_samples.valid
    epoch_steps = steps_per_epoch(n_train, config.training.batchsize)
    assert result["method"] == "mdcrl:linear+none" and result["phase"] == "train"
    assert (result["members"], result["dim_z"], result["num_domains"]) == (members, 4, 2)
    assert result["batch"] == config.training.batchsize
    assert result["padded_to"] >= members and result["padded_to"] % result["devices"] == 0
    # a call is as many whole epochs as fit in steps_per_call, at the reported rate
    call_steps = config.training.steps_per_call // epoch_steps * epoch_steps
    assert result["call_s"] == pytest.approx(call_steps / result["steps_per_s"], rel=0.01)
    assert 0 < result["with_epoch_ends_steps_per_s"] < 1.5 * result["steps_per_s"]
    # every step advances every member
    assert result["member_steps_per_s"] == pytest.approx(members * result["steps_per_s"],
                                                         abs=0.1 * members)
    assert result["compile_s"] > result["call_s"] > 0
    for key in ("floor_steps_per_s", "floor_optimizer_steps_per_s"):
        assert math.isfinite(result[key]) and result[key] >= 0.1 * result["steps_per_s"], (
            key, result)
