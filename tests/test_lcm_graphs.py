"""Graphs of WS-CRL runs end to end: a learned ENCO graph inside the ILCM, the post-hoc ENCO
and implicit graphs of every member with their SHDs and figure, and the topological order fixed
mid-training."""

import collections
import logging
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import one_phase, tiny_scaling_config
from wscrl_jax import experiment
from wscrl_jax.run import members as run_members
from wscrl_jax.train.sweep import sweep_members
from wscrl_jax.causal.graphs import create_graph
from wscrl_jax.lcm.ilcm import graph_context_masks
from wscrl_jax.train import checkpoint

D = 3


@pytest.fixture(scope="module")
def enco_ilcm_run(tmp_path_factory):
    """Two members of a tiny ILCM with a learned ENCO graph, evaluated with every graph."""
    config = tiny_scaling_config("ilcm", dim_z=D)
    config.model.scm.adjacency_matrix = "enco"
    config.training.graph_sampling.mode = "hard"
    config.training.edge_regularization_schedule.final = 0.01
    config.training.cyclicity_regularization_schedule.final = 0.1
    config.eval.graphs = True
    one_phase(config)
    config.sweep.seeds = "1,2"
    config.sweep.data_seeds = "42"
    config.eval.compile_ahead = "on"
    workdir = str(tmp_path_factory.mktemp("enco_ilcm"))
    rows, threads = run_logging_compiles(config, workdir)
    return config, workdir, rows, threads


def run_logging_compiles(config, workdir):
    """(rows, CompileLog.threads) of `experiment.run`."""
    compiles = CompileLog()
    logger = logging.getLogger("jax")
    logger.addHandler(compiles)
    jax.config.update("jax_log_compiles", True)  # every thread's (the context is per thread)
    try:
        rows = experiment.run(config, workdir, progress=False)
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(compiles)
    return rows, compiles.threads


class CompileLog(logging.Handler):
    """{compiled program name: [names of the threads that compiled it]} from JAX's
    `log_compiles` records."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.threads = collections.defaultdict(list)

    def emit(self, record):
        match = re.match(r"Finished XLA compilation of jit\((\w+)\)", record.getMessage())
        if match:
            self.threads[match.group(1)].append(record.threadName)


def _matrix(row, prefix):
    return np.array([[float(row[f"{prefix}_{i}_{j}"]) for j in range(D)] for i in range(D)])


def test_evaluation_programs_compile_while_training_runs(enco_ilcm_run):
    """eval.compile_ahead=on: every compiled stage of the evaluation was compiled once, in the
    background thread, and the evaluation itself compiled none of them again."""
    threads = enco_ilcm_run[3]
    for name in ("_encode", "_enco_graphs", "_implicit_graphs", "_learned_graphs",
                 "_test_outputs", "_iwae_log_likelihood"):
        assert threads[name] == ["evaluation-ahead"], (name, threads[name])


def test_evaluation_programs_compile_beside_the_evaluation_from_its_end(tmp_path):
    """eval.compile_ahead=end (auto on a CPU): from the end of training a background thread
    compiles the evaluation's programs, last first, while the evaluation compiles its first
    ones: each program compiles once (one waits for the other where both ask for it), the
    thread's share included, and the run's metrics are those of a run without it."""
    config = tiny_scaling_config("ilcm", dim_z=D)
    config.eval.graphs = True
    config.data.samples.val = config.data.samples.test = 192  # shapes no other test compiles
    one_phase(config)
    rows = {}
    for mode in ("end", "off"):
        config.eval.compile_ahead = mode
        rows[mode], threads = run_logging_compiles(config, str(tmp_path / mode))
        if mode == "end":
            programs = ("_encode", "_enco_graphs", "_implicit_graphs", "_test_outputs",
                        "_iwae_log_likelihood")
            for name in programs:
                assert len(threads[name]) == 1, (name, threads[name])
            assert "evaluation-ahead" in [threads[name][0] for name in programs], threads
    assert rows["end"] == rows["off"]


def test_every_member_reports_its_graphs_and_distances(enco_ilcm_run):
    _, workdir, rows, _ = enco_ilcm_run
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    truth = create_graph(D, "random", 42).astype(float)
    for row in rows:
        np.testing.assert_array_equal(_matrix(row, "true_graph"), truth)
        assert sorted(int(row[f"graph_matching_{k}"]) for k in range(D)) == list(range(D))
        for name in ("learned", "enco"):
            graph = _matrix(row, f"{name}_graph")
            assert set(np.unique(graph)) <= {0.0, 1.0} and np.all(np.diag(graph) == 0)
        implicit = _matrix(row, "implicit_graph")
        assert np.all(implicit >= 0) and np.all(np.diag(implicit) == 0)
        # an implicit graph only has edges forward in its topological order: a DAG
        assert np.count_nonzero(implicit + implicit.T > 0) <= D * (D - 1)
        for name in ("learned", "enco", "implicit"):
            assert 0 <= row[f"{name}_shd"] <= D * (D - 1) // 2
        assert np.isfinite(row["edges"]) and np.isfinite(row["cyclicity"])
    assert os.path.getsize(os.path.join(workdir, "figures", "graphs.png")) > 10_000


def test_learned_graph_parameters_train_and_regularisers_enter_the_loss(enco_ilcm_run):
    config, workdir, _, _ = enco_ilcm_run
    method, _, template = run_members.build(config, sweep_members(config))
    _, state, _ = checkpoint.restore_latest_intact(workdir, template)
    logits = np.asarray(state.params["graph"]["edge_existence_logits"])
    initial = np.asarray(template.params["graph"]["edge_existence_logits"])
    assert logits.shape == (2, D * (D - 1) // 2)
    assert np.abs(logits - initial).max() > 1e-3  # the graph was trained


def test_graph_context_masks_are_ancestors_without_self():
    chain = jnp.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]], jnp.float32)
    masks = np.asarray(graph_context_masks(chain))
    np.testing.assert_array_equal(masks, [[0, 0, 0], [1, 0, 0], [1, 1, 0]])
    cycle = chain.at[2, 0].set(1.0)
    assert np.all(np.diag(np.asarray(graph_context_masks(cycle))) == 0)


@pytest.mark.slow
def test_topological_order_is_fixed_mid_training(tmp_path, caplog):
    config = tiny_scaling_config("ilcm", dim_z=D)
    config.training.epochs = 2
    one_phase(config)
    config.training.fix_topological_order_epoch = 1
    workdir = str(tmp_path)
    with caplog.at_level("INFO", logger="wscrl_jax"):
        experiment.run(config, workdir, progress=False)
    assert "Epoch 1: topological order fixed" in caplog.text
    method, _, template = run_members.build(config, sweep_members(config))
    _, state, _ = checkpoint.restore_latest_intact(workdir, template)
    assert bool(np.asarray(state.model_state["order_fixed"])[0])
    order = np.asarray(state.model_state["order"])[0]
    assert sorted(order.tolist()) == list(range(D))


@pytest.mark.slow
def test_elcm_trains_and_reports_its_learned_graph(tmp_path):
    config = tiny_scaling_config("elcm", dim_z=D)
    config.eval.graphs = True
    rows = experiment.run(config, str(tmp_path), progress=False)
    row, = rows
    assert row["status"] == "ok" and np.isfinite(row["loss"]) and np.isfinite(row["nll"])
    graph = _matrix(row, "learned_graph")
    assert set(np.unique(graph)) <= {0.0, 1.0}
    assert row["learned_graph_acyclic"] in (0, 1) and 0 <= row["learned_shd"] <= 3
    assert "enco_graph_0_1" not in row  # post-hoc graphs read ILCM solution functions only
    assert 0.0 <= row["intervention_accuracy"] <= 1.0  # the SCM's intervention posterior
    method, _, template = run_members.build(config, sweep_members(config))
    _, state, _ = checkpoint.restore_latest_intact(str(tmp_path), template)
    assert int(np.asarray(state.nan_count)[0]) == 0


def test_elcm_loss_with_a_fixed_order_graph_is_finite_and_marginalises_targets():
    """The fixed-order explicit SCM, unusable in the reference's ELCM (ws-crl gotcha 10)."""
    import jax
    from wscrl_jax.lcm.method import LCMMethod
    config = tiny_scaling_config("elcm", dim_z=D)
    config.model.scm.adjacency_matrix = "fixed_order"
    config.training.graph_sampling.final.freeze_epoch = 1  # frozen, two hard samples per pair
    config.training.graph_sampling.final.mode = "hard"
    config.training.graph_sampling.final.samples = 2
    method = LCMMethod(config)
    params, _ = method.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (8, D))
    phase = method.phase_for_epoch(config.training.epochs - 1)
    assert phase.graph_frozen and phase.graph_samples == 2 and phase.graph_mode == "hard"
    loss_b, outputs = method.per_sample(params, method.initial_model_state(), x, x + 0.1,
                                        jax.random.PRNGKey(2), method.loss_weights(1.0), phase)
    assert loss_b.shape == (8,) and np.all(np.isfinite(loss_b))
    q = np.asarray(outputs["intervention_posterior"])
    np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-5)
    assert q.shape == (8, D + 1)
    assert float(outputs["cyclicity"][0]) == 0.0
