"""Scaling toy dataset, generated on device (`experiments/scaling.py`,
`ws_crl/causal/scm.py: FixedGraphLinearANM`, `ws_crl/encoder/flow.py: SONEncoder`).

Ground truth: a random DAG, a linear Gaussian SCM with unit noise and bimodal weights
`sign(n1) * (1 + 0.3 n2)`, atomic-or-none perfect interventions resampling N(0, 1), and a
random rotation R = expm(skew(c)), c ~ N(0, 1), with observations x = R^T z. Beyond the
reference: nonlinear (spline) mechanisms and a coupling-flow mixing after the rotation
(`data.nature.mechanisms`, `data.mixing`; `causal/flow_lcm.py`).

Unlike the reference (ws-crl gotcha 1) everything, samples included, is a deterministic
function of the data seed. The ground truth is the reference's for the same seed: the graph from
numpy `default_rng(seed)`, the weights and rotation coefficients from torch's generator after
`manual_seed(seed)`, emulated in numpy (`torch_rng.py`; `data.nature.rng="jax"` draws them from
`PRNGKey(seed)` instead, as before). Each split's samples come from its own folded-in JAX key
(the reference's are unseeded).
"""

from functools import partial
from typing import Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from wscrl_jax.causal.flow_lcm import (MECHANISMS, MIXINGS, Mechanisms, causal_value,
                                       log_prob_pairs, mix, random_mechanisms, random_mixing_flow)
from wscrl_jax.causal.graphs import create_graph, topological_sort
from wscrl_jax.causal.interventions import intervention_masks
from wscrl_jax.data.torch_rng import reference_scaling_nature
from wscrl_jax.flows.so_n import so_n_rotation

SPLITS = ("train", "dci_train", "val", "test")
# The exact likelihood of the pairs (`true_log_prob` of val and test, the `flow_nll` metric) is
# stored only without observation noise (it has no density term for it) and where the
# counterfactual noise is resolvable in float32 (the default 1e-9 is far below x's rounding).
FLOW_NLL_MIN_THICKNESS = 1e-3
CAUSAL_EFFECTS = ("bimodal", "standard")
NATURE_RNGS = ("reference", "jax")


class Nature(NamedTuple):
    """Ground truth: adjacency [d, d], weights [d, d] (w[j, i] for edge j -> i), rotation [d, d];
    for nonlinear mechanisms their splines (`flow_lcm.Mechanisms`), for a flow mixing its
    parameters (`causal/flow_lcm.py`; None: linear mechanisms, rotation only)."""

    adjacency: jnp.ndarray
    weights: jnp.ndarray
    rotation: jnp.ndarray
    mechanisms: Optional[Mechanisms] = None
    mixing_flow: Optional[dict] = None


def create_nature(dim_z: int, mode: str, seed: int, causal_effects: str = "bimodal",
                  rng: str = "reference", mechanisms: str = "linear",
                  mixing: str = "so_n") -> Nature:
    """The ground truth of a data seed. rng "reference": the reference's weights and rotation
    coefficients for that seed; "jax": drawn from `PRNGKey(seed)` (this package before).
    `mechanisms` (`flow_lcm.MECHANISMS`) and `mixing` (`flow_lcm.MIXINGS`): the nonlinear
    options draw their parameters from `PRNGKey(seed)` folded with 2 and 3."""
    if causal_effects not in CAUSAL_EFFECTS:
        raise ValueError(f"unknown causal_effects {causal_effects!r}; expected {CAUSAL_EFFECTS}")
    if mechanisms not in MECHANISMS or mixing not in MIXINGS:
        raise ValueError(f"mechanisms={mechanisms!r}, mixing={mixing!r}: expected one of "
                         f"{MECHANISMS} and one of {MIXINGS}")
    adjacency = create_graph(dim_z, mode, seed)
    if rng == "reference":
        weights, coeffs = reference_scaling_nature(dim_z, seed, causal_effects)
        weights, coeffs = jnp.asarray(weights), jnp.asarray(coeffs)
    elif rng == "jax":
        weights, coeffs = _jax_weights_and_coeffs(jax.random.PRNGKey(seed), dim_z, causal_effects)
    else:
        raise ValueError(f"unknown data.nature.rng {rng!r}; expected one of {NATURE_RNGS}")
    key = lambda k: jax.random.fold_in(jax.random.PRNGKey(seed), k)  # noqa: E731
    return Nature(
        jnp.asarray(adjacency, jnp.float32), weights, so_n_rotation(coeffs, dim_z),
        None if mechanisms == "linear" else random_mechanisms(key(2), dim_z, mechanisms),
        random_mixing_flow(key(3), dim_z) if mixing == "flow" else None)


@partial(jax.jit, static_argnums=(1, 2))
def _jax_weights_and_coeffs(key, dim_z: int, causal_effects: str):
    k_sign, k_mag, k_rot = jax.random.split(key, 3)
    if causal_effects == "bimodal":
        weights = (jnp.sign(jax.random.normal(k_sign, (dim_z, dim_z)))
                   * (1.0 + 0.3 * jax.random.normal(k_mag, (dim_z, dim_z))))
    else:
        weights = jax.random.normal(k_mag, (dim_z, dim_z))
    return weights, jax.random.normal(k_rot, (dim_z * (dim_z - 1) // 2,))


@partial(jax.jit, static_argnames=("n", "order", "observation_noise"))
def sample_pairs(key, nature: Nature, n: int, order: tuple, manifold_thickness: float = 1e-9,
                 observation_noise: float = 0.0) -> Dict[str, jnp.ndarray]:
    """n weakly supervised pairs (`BaseLCM.sample`): x1, x2, z1, z2 [n, d] float32,
    intervention_labels [n] int32 (0 = none, k = variable k-1), true_interventions [n, d] int32.

    z2 is the counterfactual of z1: non-intervened variables keep their noise and are
    recomputed from z2's parents; intervened ones are redrawn from N(0, 1).
    """
    d = nature.weights.shape[0]
    k_lab, k_eps, k_int, k_cf, k_n1, k_n2 = jax.random.split(key, 6)
    labels = jax.random.randint(k_lab, (n,), 0, d + 1)
    masks = jnp.asarray(intervention_masks(d))[labels]
    eps = jax.random.normal(k_eps, (n, d))
    eps_int = jax.random.normal(k_int, (n, d))
    cf = manifold_thickness * jax.random.normal(k_cf, (n, d))
    effects = nature.adjacency * nature.weights  # [parent, child]
    z1 = jnp.zeros((n, d))
    z2 = jnp.zeros((n, d))
    for i in order:
        z1 = z1.at[:, i].set(causal_value(i, eps[:, i], z1, effects, nature.mechanisms))
        observational = causal_value(i, eps[:, i], z2, effects, nature.mechanisms, cf[:, i])
        z2 = z2.at[:, i].set(masks[:, i] * eps_int[:, i] + (1 - masks[:, i]) * observational)
    x1, x2 = (mix(z, nature.rotation, nature.mixing_flow) for z in (z1, z2))  # x = F(R^T z)
    if observation_noise:
        x1 = x1 + observation_noise * jax.random.normal(k_n1, x1.shape)
        x2 = x2 + observation_noise * jax.random.normal(k_n2, x2.shape)
    return {"x1": x1, "x2": x2, "z1": z1, "z2": z2, "intervention_labels": labels.astype(jnp.int32),
            "true_interventions": masks.astype(jnp.int32)}


@partial(jax.jit, static_argnames=("n", "order", "observation_noise"))
def _sample_split(seed, index, nature: Nature, n: int, order: tuple, manifold_thickness: float,
                  observation_noise: float) -> Dict[str, jnp.ndarray]:
    """`sample_pairs` of split `index` of a data seed, from the key `PRNGKey(seed)` folded with
    1, then with `index`: the keys made in the same program (eagerly, each of their operations
    compiles a program of its own)."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 1), index)
    return sample_pairs(key, nature, n, order, manifold_thickness, observation_noise)


# A split drawn at a larger size wastes at most this many rows (about 0.1 s on one CPU core,
# against 0.5 s or more for compiling `sample_pairs` at one more size).
MAX_EXTRA_ROWS = 1_000_000


def drawn_sizes(sizes: Dict[str, int]) -> Dict[str, int]:
    """The size at which `sample_pairs` draws each split, which then keeps its first rows.

    With JAX's partitionable threefry (its default) a draw's first rows do not depend on how
    many rows it has, so a split is drawn at the largest size where that wastes at most
    `MAX_EXTRA_ROWS`: one compilation of `sample_pairs` serves every split, the same bits
    (`tests/test_scaling_data.py`). Without it, each split is drawn at its own size.
    """
    largest = max(int(n) for n in sizes.values())
    shared = jax.config.jax_threefry_partitionable
    return {split: largest if shared and largest - int(n) <= MAX_EXTRA_ROWS else int(n)
            for split, n in sizes.items()}


def make_scaling_data(data_cfg, seed: int) -> Dict[str, Dict[str, jnp.ndarray]]:
    """All four splits for one data seed, {split: {name: array [n, ...]}}, and the true graph,
    `{"truth": {"adjacency": [d, d]}}` (A[i, j] = 1: edge i -> j)."""
    # configs written before a key existed get it from `experiment.with_added_keys`
    nature = create_nature(data_cfg.dim_z, data_cfg.nature.mode, seed,
                           data_cfg.nature.causal_effects, data_cfg.nature.rng,
                           data_cfg.nature.mechanisms, data_cfg.mixing)
    order = tuple(topological_sort(np.asarray(nature.adjacency)))
    sizes = {"train": data_cfg.samples.train, "dci_train": data_cfg.samples.train,
             "val": data_cfg.samples.val, "test": data_cfg.samples.test}
    noise = float(data_cfg.nature.observation_noise or 0.0)
    thickness = float(data_cfg.nature.manifold_thickness)
    drawn = drawn_sizes(sizes)
    splits = {}
    for index, split in enumerate(SPLITS):
        pairs = _sample_split(np.uint32(seed), np.int32(index), nature, drawn[split], order,
                              thickness, noise)
        n = int(sizes[split])
        splits[split] = pairs if drawn[split] == n else {
            name: jnp.asarray(np.asarray(a)[:n]) for name, a in pairs.items()}
    if not noise and thickness >= FLOW_NLL_MIN_THICKNESS:
        for split in ("val", "test"):
            pairs = splits[split]
            pairs["true_log_prob"] = log_prob_pairs(
                pairs["x1"], pairs["x2"], nature.adjacency * nature.weights, nature.rotation,
                nature.mechanisms, nature.mixing_flow, thickness)
    splits["truth"] = {"adjacency": jnp.asarray(nature.adjacency, jnp.int32)}  # [d, d], i -> j
    return splits
