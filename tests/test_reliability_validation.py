"""Validation found by the reliability probe: CausalCircuit image sizes, upper bounds on sizes
that would exhaust memory, stage-2 workdirs of another pipeline, and one-line errors of the
helper scripts and of config loading."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, load_config
from wscrl_jax.config_checks import ConfigError
from wscrl_jax.methods import validate_config

SCRIPTS = os.path.join(ROOT, "scripts")


def one_line(args, cwd, code=2):
    out = subprocess.run([sys.executable] + args, capture_output=True, text=True, timeout=300,
                         cwd=cwd, env=dict(os.environ, PYTHONPATH=ROOT))
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == code and len(lines) == 1 and lines[0].startswith("error:"), (
        out.returncode, out.stderr[-2000:])
    return lines[0]


def test_builder_sizes_match_the_image_vae():
    from wscrl_jax.data.causalcircuit.builder import VAE_SIZES
    from wscrl_jax.lcm.image_vae import RESOLUTIONS
    assert tuple(VAE_SIZES) == tuple(RESOLUTIONS)


@pytest.mark.parametrize("size, resolution, ok", [
    (512, None, True), (64, None, True), (17, None, False), (100, None, False),
    (100, 64, True), (512, 64, True), (32, 64, False)])
def test_builder_refuses_sizes_the_image_vae_cannot_take(size, resolution, ok):
    from wscrl_jax.data.causalcircuit.builder import check_size
    from wscrl_jax.data.causalcircuit.files import CausalCircuitFormatError
    if ok:
        check_size(size, resolution, "D")
    else:
        with pytest.raises(CausalCircuitFormatError, match=f"{size}x{size}"):
            check_size(size, resolution, "D")


def test_17_pixel_download_is_refused_before_anything_is_built(tmp_path):
    from wscrl_jax.data.causalcircuit.toy import write_toy_dataset
    write_toy_dataset(str(tmp_path / "d"), 4, 2, 2, resolution=17, seed=0)
    line = one_line([os.path.join(SCRIPTS, "build_causalcircuit.py"), "--data_dir",
                     str(tmp_path / "d"), "--tfds_dir", str(tmp_path / "t")], tmp_path)
    assert "17x17" in line and "64 or 512" in line
    assert not (tmp_path / "t" / "causalcircuit").exists()


def test_dataset_resolution_is_checked_against_data_resolution(tmp_path):
    """The README's toy path without --resolution: 64 px images stored as `full`, read by a
    config with data.resolution=512: one line saying how to build and what to pass."""
    pytest.importorskip("tensorflow_datasets")
    from wscrl_jax.data.causalcircuit.builder import build
    from wscrl_jax.data.causalcircuit.toy import write_toy_dataset
    write_toy_dataset(str(tmp_path / "d"), 16, 4, 4, resolution=64, seed=0)
    build(str(tmp_path / "d"), str(tmp_path / "t"), None, workers=1)
    c = load_config("causalcircuit_reduce_dim", "512")
    c.data.tfds_dir = str(tmp_path / "t")
    c.training.batchsize = 4
    with pytest.raises(ConfigError, match="are 64x64.*--resolution 64.*data.resolution=64"):
        validate_config(c)


@pytest.mark.parametrize("name, arg, key, value, message", [
    ("scaling", "ilcm,fast", "data.dim_z", 100000, "data.dim_z=100000 is above 100"),
    ("scaling", "ilcm,fast", "data.samples.train", 10**9, "GiB of data"),
    ("md_mixing", "poly_stage1", "data.z_dim", 100000, "polynomial features"),
    ("md_mixing", "linear", "data.z_dim", 100000, "GiB of data, above the 8 GiB bound"),
])
def test_sizes_that_would_exhaust_memory_are_refused(name, arg, key, value, message):
    c = load_config(name, arg)
    node = c
    *path, leaf = key.split(".")
    for part in path:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(c)


def test_mdcrl_stage2_refuses_a_causalcircuit_stage1(tmp_path):
    (tmp_path / "encoded").mkdir()
    (tmp_path / "encoded" / "meta.json").write_text(json.dumps({
        "source": "causalcircuit", "latent_dim": 8, "z_dim": 4, "members": [[1, 1]],
        "splits": {"train": 100, "val": 10, "test": 10}}))
    c = load_config("md_mixing", "poly_stage2")
    c.data.stage1_workdir = str(tmp_path)
    with pytest.raises(ConfigError, match="another pipeline"):
        validate_config(c)


@pytest.mark.parametrize("args, message", [
    (["make_toy_causalcircuit.py", "--out_dir", "o", "--seed=-1"], "--seed must be"),
    (["make_toy_causalcircuit.py", "--out_dir", "o", "--resolution", "100000"],
     "--resolution must be 16 to 512"),
    (["make_toy_causalcircuit.py"], "required: --out_dir (see --help)"),
    (["plot_scaling.py", "--out", "/missing/dir/x.png", "w"], "/missing/dir does not exist"),
    (["build_causalcircuit.py", "--data_dir", "x", "--tfds_dir", "y", "--resolution", "17"],
     "invalid choice"),
])
def test_helper_scripts_fail_in_one_line(tmp_path, args, message):
    assert message in one_line([os.path.join(SCRIPTS, args[0])] + args[1:], tmp_path)


@pytest.mark.parametrize("text, override, message", [
    ("x = 1\n", [], "defines no get_config(arg) function"),
    ("def get_config(arg=None):\n    return {'method': 'lcm'}\n", [],
     "returned a dict, not an ml_collections.ConfigDict"),
    (None, ["--config.data.dimz=3"], "unknown config key 'dimz' (did you mean \"dim_z\""),
])
def test_config_loading_errors_are_one_clear_line(tmp_path, text, override, message):
    config = os.path.join(ROOT, "configs", "scaling.py") + ":ilcm,fast"
    if text is not None:
        (tmp_path / "c.py").write_text(text)
        config = str(tmp_path / "c.py")
    line = one_line([os.path.join(SCRIPTS, "train.py"), f"--config={config}",
                     f"--workdir={tmp_path / 'w'}"] + override, tmp_path)
    assert message in line and "\\n" not in line
    if text is not None:  # a broken config file does not blame the overrides
        assert "overrides" not in line
