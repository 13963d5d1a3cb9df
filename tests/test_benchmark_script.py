"""`scripts/benchmark.py` (the figures of docs/performance.md): a case reports its throughput and,
with `--floor`, both floors (the loss alone, and with clipping and the optimizer)."""

import os
import sys

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import benchmark  # noqa: E402


def test_md_case_reports_steps_and_both_floors():
    result = benchmark.bench_md_case("linear+none", z_dim=4, num_domains=2, members=1, calls=1,
                                     floor=True)
    assert result["method"] == "mdcrl:linear+none" and result["members"] == 1
    for key in ("steps_per_s", "floor_steps_per_s", "floor_optimizer_steps_per_s"):
        assert result[key] > 0, key
