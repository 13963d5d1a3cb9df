"""The outcome-comparison tools in tools/reference/ (the parts that run without the references):
seed lists, the Holm correction, the per-setting summary and the markdown table."""

import csv
import importlib.util
import math
import pathlib

import pytest

TOOLS = pathlib.Path(__file__).resolve().parents[1] / "tools" / "reference"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"reference_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


analyse = _load("analyse")
compare = _load("compare")


def test_parse_seeds():
    assert compare.parse_seeds("42-45") == [42, 43, 44, 45]
    assert compare.parse_seeds("1,5-6,9") == [1, 5, 6, 9]


def test_settings_name_their_headline():
    for name in compare.SETTINGS:
        assert analyse.headline(name) in compare.SETTINGS[name]["metrics"]


def test_holm():
    # sorted p: 0.01 (x3), 0.02 (x2), 0.04 (x1); monotone; NaN passes through
    got = analyse.holm([0.04, 0.01, float("nan"), 0.02])
    assert got[1] == pytest.approx(0.03)
    assert got[3] == pytest.approx(0.04)
    assert got[0] == pytest.approx(0.04)
    assert math.isnan(got[2])
    assert analyse.holm([0.6, 0.7]) == [1.0, 1.0]


def test_summary_counts_failures_and_missing_outcomes(tmp_path):
    path = tmp_path / "wscrl_x.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["side", "seed", "data_seed", "status", "causal_disentanglement", "mse",
                    "nll", "wall_s"])
        for seed, value in enumerate([0.95, 0.97, 0.5, 0.99]):
            w.writerow(["reference", seed, 42, "ok", value, 0.02, 4.0, 1])
        w.writerow(["reference", 3, 42, "failed (exit 1)", "nan", "nan", "nan", 1])  # last wins
        for seed, value in enumerate([0.96, 0.98, 0.985, 0.99]):
            w.writerow(["ours", seed, 42, "ok", value, 0.03, 4.5, 1])
    result = analyse.summarise("wscrl_x", analyse.load(path))
    ref, ours = result["sides"]["reference"], result["sides"]["ours"]
    assert (ref["n"], ref["fails"], ours["fails"]) == (4, 2, 0)
    assert ref["median"] == pytest.approx(0.95)
    assert ours["mse"] == pytest.approx(0.03)
    assert 0.0 < result["p"] <= 1.0
    result["p_holm"] = result["p"]
    table = analyse.markdown({"wscrl_x": result})
    assert "| wscrl_x | causal_disentanglement | reference (PyTorch) | 4 |" in table
    assert "2/4" in table


def test_a_solo_setting_takes_its_reference_rows_from_the_base_setting(tmp_path):
    """`*_solo` settings rerun only our side; their reference side is the base setting's rows,
    copied once (rerunning copies nothing twice)."""
    base = tmp_path / "wscrl_ilcm_d3_random.csv"
    with open(base, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["side", "seed", "data_seed", "status", "causal_disentanglement", "mse",
                    "nll", "wall_s"])
        w.writerow(["reference", 42, 42, "ok", 0.97, 0.02, 4.2, 100])
        w.writerow(["reference", 43, 42, "ok", 0.75, 0.2, 5.0, 100])
        w.writerow(["ours", 42, 42, "ok", 0.96, 0.02, 4.3, 50])
    for _ in range(2):
        compare.main(["wscrl_ilcm_d3_random_solo", "--side", "reference", "--seeds", "42-43",
                      "--out", str(tmp_path)])
    rows = compare.read_rows(tmp_path / "wscrl_ilcm_d3_random_solo.csv")
    assert [(r["side"], r["seed"], r["causal_disentanglement"]) for r in rows] == [
        ("reference", "42", "0.97"), ("reference", "43", "0.75")]
    assert "--config.training.member_loop=sequential" in \
        compare.SETTINGS["wscrl_ilcm_d3_random_solo"]["ours_overrides"]


def test_side_by_side_rows_pair_the_two_sides_and_divide():
    side_by_side = _load("side_by_side")
    ours_md = {"method": "mdcrl:linear+minmax", "phase": "train", "dim_z": 8}
    ref_md = {"method": "mdcrl_linear", "phase": "minmax", "dim_z": 8}
    assert side_by_side.row_key(ours_md) == side_by_side.row_key(ref_md)
    table = {("ilcm", "main", 4): {"ours": [1000.0, 1200.0, 900.0], "reference": [50.0, 40.0]},
             ("ilcm", "pretrain", 4): {"ours": [4000.0], "reference": [200.0]},
             ("mdcrl_linear", "none", 8): {"ours": [100.0], "reference": []}}  # one side only
    text = side_by_side.markdown(table, type("Args", (), {"rounds": 2, "threads": 2}))
    lines = text.splitlines()
    assert lines[2] == "| ilcm d=4 pretrain | 200.0 | 4,000 | 20.0x |"  # phases in order
    assert lines[3] == "| ilcm d=4 main | 45.0 | 1,000 | 22.2x |"  # medians, then the ratio
    assert "none" not in text
