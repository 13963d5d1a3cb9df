"""Shared test helpers: loading config files and a tiny, fast scaling config."""

import os

import pytest

from wscrl_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg: str):
    """get_config(arg) of configs/<name>.py."""
    return cli.load_config(os.path.join(ROOT, "configs", f"{name}.py") + f":{arg}")


def tiny_scaling_config(method: str = "ilcm", dim_z: int = 2):
    """The fast config shrunk to seconds: 20 steps per epoch, 16-unit networks."""
    c = load_config("scaling", f"{method},fast")
    c.data.dim_z = dim_z
    c.data.samples.train = 1280
    c.data.samples.val = 256
    c.data.samples.test = 256
    for net in ("encoder", "decoder", "scm"):
        c.model[net].hidden_units = 16
    c.training.iwae_samples = 2
    c.training.steps_per_call = 100
    c.checkpoint.every_n_steps = 200
    c.checkpoint.async_save = False
    c.eval.graphs = False  # graph evaluations: tests/test_lcm_graphs.py
    return c


def one_phase(config):
    """The ILCM / dVAE config with every epoch in its main phase (interventions modelled from
    the start): one compilation of the training step instead of one per phase."""
    config.training.pretrain_epochs = None
    config.training.model_interventions_after_epoch = None
    config.training.deterministic_intervention_encoder_after_epoch = None
    return config


@pytest.fixture
def tiny_config():
    return tiny_scaling_config


@pytest.fixture(scope="session", autouse=True)
def shared_compilation_cache(tmp_path_factory):
    """One persistent XLA cache for the whole test session (in-process runs and the scripts the
    tests start): runs of the same tiny configs compile their programs once. Fresh each
    session, so the test run does not depend on what an earlier one left behind."""
    import jax
    path = str(tmp_path_factory.mktemp("xla_cache"))
    os.environ["WSCRL_JAX_CACHE"] = path
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    yield
