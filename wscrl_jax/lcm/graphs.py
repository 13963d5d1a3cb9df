"""The causal graphs of trained WS-CRL models, every member of a sweep together: for an ILCM
(or dVAE) the implicit graph of its solution functions (d <= 5, as the reference) and post-hoc
ENCO on its codes (`experiments/scaling.py: eval_implicit_graph, eval_enco_graph`), each one
compiled call for all members; for a model trained with a learned graph (ILCM or ELCM) that
graph; then, beyond the reference, each graph carried to the true variables by the DCI matching
and its structural Hamming distance to the true graph.

Columns per member: `enco_graph_i_j` (0/1) and `implicit_graph_i_j` (effect strength) as the
reference, over the model's codes; `learned_graph_i_j` and `learned_graph_acyclic` for models
trained with a learned graph (`model.scm.adjacency_matrix` = enco / dds / fixed_order: its hard
adjacency); then
`true_graph_i_j`, `graph_matching_k` (the true factor of code k) and the SHDs `enco_shd`,
`implicit_shd` (the implicit graph thresholded at `eval.implicit_graph_threshold`) and
`learned_shd`.
"""

import logging
import time
from functools import partial
from typing import Callable, Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from wscrl_jax.causal.explicit_scm import is_acyclic
from wscrl_jax.eval.enco import EncoSettings, learn_graph
from wscrl_jax.eval.graph_match import match_latents, structural_hamming_distance, to_true_order
from wscrl_jax.eval.implicit_graph import greedy_order, implicit_graph, order_dependences
from wscrl_jax.train.run_once import run_once_jit

log = logging.getLogger("wscrl_jax")
IMPLICIT_MAX_DIM = 5  # the reference skips the implicit graph above (d! orders otherwise)


def _apply(method, params, *args, name, key=None):
    rngs = None if key is None else {"sample": key}
    return method.module.apply({"params": params}, *args, method=name, rngs=rngs)


@partial(jax.jit, static_argnums=(0, 5))
def _enco_graphs(method, params, model_state, split, keys, settings: EncoSettings):
    """ENCO of every member: adjacency [M, d, d] and the `EncoResult` fields [M, ...]."""
    def one(params, model_state, x1, x2, key):
        k_proj, k_enco = jax.random.split(key)
        z1, z2, interventions = _apply(method, params, x1, x2, model_state, name="enco_inputs",
                                       key=k_proj)
        return learn_graph(k_enco, z1, z2, interventions, settings)
    return jax.vmap(one)(params, model_state, split["x1"], split["x2"], keys)


@run_once_jit(static_argnums=(0, 5))
def _implicit_graphs(method, params, model_state, x, keys, fix_direction: bool):
    """Implicit graph of every member: effects [M, d, d], topological orders [M, d]."""
    def one(params, model_state, x, key):
        noise = _apply(method, params, x, name="encode_to_noise")
        masks = _apply(method, params, model_state, name="context_masks")
        causal = _apply(method, params, x, model_state, name="encode_to_causal")
        return implicit_graph(key, _solution(method, params), noise, causal, masks,
                              fix_direction)
    return jax.vmap(one)(params, model_state, x, keys)


def _solution(method, params):
    """The model's solution functions as `eval/implicit_graph.py` sees them."""
    def solution(index, inputs, conditioning, mask_row, inverse):
        return _apply(method, params, index, inputs, conditioning, mask_row, inverse,
                      name="solution_component")
    return solution


@partial(jax.jit, static_argnums=0)
def solution_orders(method, params, x, keys):
    """Topological order [M, d] of every member's solution functions on observations
    x [M, N, dim_x] (`find_topological_order` on the encoder means)."""
    def one(params, x, key):
        noise = _apply(method, params, x, name="encode_to_noise")
        return greedy_order(order_dependences(key, _solution(method, params), noise))
    return jax.vmap(one)(params, x, keys)


@partial(jax.jit, static_argnums=0)
def _learned_graphs(method, params):
    """Hard adjacency [M, d, d] of every member's learned graph parameters."""
    return jax.vmap(lambda p: _apply(method, p, name="hard_graph"))(params)


def _matrix_columns(prefix: str, matrix) -> Dict[str, float]:
    matrix = np.asarray(matrix)
    return {f"{prefix}_{i}_{j}": matrix[i, j].item()
            for i in range(matrix.shape[0]) for j in range(matrix.shape[1])}


def importance_matrix(dci_metrics: Dict[str, float], dim: int) -> np.ndarray:
    """The DCI importance matrix [d_model, d_true] back from its metric columns."""
    return np.array([[dci_metrics[f"importance_matrix_{i}_{j}"] for j in range(dim)]
                     for i in range(dim)])


def posthoc_keys(keys):
    """(ENCO keys, implicit-graph keys), [M, 2] each, from the graph keys [M, 2]."""
    return jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)


def enco_settings(eval_config) -> EncoSettings:
    return EncoSettings(lambda_sparse=float(eval_config.enco_lambda),
                        reference_quirks=bool(eval_config.enco_reference_quirks))


def graph_programs(method, params, model_state, split, keys):
    """[(jitted function, arguments)] of the compiled calls `learned_graph_metrics` makes on
    these arguments (params, model_state may be `jax.ShapeDtypeStruct`s; keys: the graph keys
    [M, 2]), for compiling them ahead."""
    cfg, programs = method.config.eval, []
    if method.has_solution_functions:
        k_enco, k_implicit = posthoc_keys(keys)
        pair = {"x1": split["x1"], "x2": split["x2"]}
        programs.append((_enco_graphs, (method, params, model_state, pair, k_enco,
                                        enco_settings(cfg))))
        if method.dim_z <= IMPLICIT_MAX_DIM:
            programs.append((_implicit_graphs, (
                method, params, model_state, pair["x1"], k_implicit,
                bool(cfg.implicit_graph_fix_direction))))
    if method.graph_kind is not None:
        programs.append((_learned_graphs, (method, params)))
    return programs


def learned_graph_metrics(method, params, model_state, split, truth, keys,
                          dci: Callable[[], List[dict]], bar) -> List[Dict[str, float]]:
    """Graph columns of every member (see the module docstring); `dci()` gives each member's
    DCI metrics (for the matching; called once the graphs are learned, so that the DCI can run
    meanwhile), `truth` the true adjacency [M, d, d] or None (unknown: no matching, no
    distances)."""
    dim, num_members = method.dim_z, keys.shape[0]
    k_enco, k_implicit = posthoc_keys(keys)
    columns = [{} for _ in range(num_members)]
    graphs = {}

    if method.has_solution_functions:  # post-hoc graphs of ILCMs (and dVAEs) only
        _posthoc_graphs(method, params, model_state, split, k_enco, k_implicit, bar, columns,
                        graphs)
    else:
        bar.update(2)

    if method.graph_kind is not None:  # trained with a learned graph
        learned = np.asarray(jax.device_get(_learned_graphs(method, params))).astype(np.int32)
        graphs["learned"] = learned
        acyclic = np.asarray(is_acyclic(jnp.asarray(learned)))
        for i in range(num_members):
            columns[i].update(_matrix_columns("learned_graph", learned[i]))
            columns[i]["learned_graph_acyclic"] = int(acyclic[i])

    if truth is None:  # true graph unknown (real CausalCircuit): learned graphs only
        return columns
    truth = np.asarray(truth)
    dci = dci()
    for i in range(num_members):
        matching = match_latents(importance_matrix(dci[i], dim))
        columns[i].update(_matrix_columns("true_graph", truth[i]))
        columns[i].update({f"graph_matching_{k}": int(m) for k, m in enumerate(matching)})
        for name, adjacency in graphs.items():
            columns[i][f"{name}_shd"] = structural_hamming_distance(
                to_true_order(adjacency[i], matching), truth[i])
    return columns


def _posthoc_graphs(method, params, model_state, split, k_enco, k_implicit, bar, columns,
                    graphs):
    """ENCO and the implicit graph of every member into `columns` and `graphs`."""
    cfg, dim, num_members = method.config.eval, method.dim_z, len(columns)
    bar.set_description("evaluation: ENCO graph")
    start = time.time()
    enco = jax.device_get(_enco_graphs(method, params, model_state,
                                       {"x1": split["x1"], "x2": split["x2"]}, k_enco,
                                       enco_settings(cfg)))
    log.info("ENCO graphs of %d member(s) in %.1f s (%s epochs after pretraining)", num_members,
             time.time() - start, ", ".join(str(int(e)) for e in enco.epochs))
    graphs["enco"] = enco.adjacency
    for i in range(num_members):
        columns[i].update(_matrix_columns("enco_graph", enco.adjacency[i]))
        log.info("ENCO adjacency matrix (member %d): %s", i, enco.adjacency[i].tolist())
    bar.update()

    bar.set_description("evaluation: implicit graph")
    if dim <= IMPLICIT_MAX_DIM:
        start = time.time()
        effects, _ = jax.device_get(_implicit_graphs(
            method, params, model_state, split["x1"], k_implicit,
            bool(cfg.implicit_graph_fix_direction)))
        log.info("Implicit graphs of %d member(s) in %.1f s", num_members, time.time() - start)
        graphs["implicit"] = (effects > float(cfg.implicit_graph_threshold)).astype(np.int32)
        for i in range(num_members):
            columns[i].update(_matrix_columns("implicit_graph", effects[i]))
    bar.update()
