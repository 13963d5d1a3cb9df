"""Final evaluation of a trained latent causal model (`experiments/scaling.py: evaluate`).

DCI on causal codes (regressors fit on `dci_train`, scored on the evaluation split), then the
test-set loss terms on the whole split as one batch and the IWAE negative log-likelihood.
"""

import logging
import math
import time
from functools import partial
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from wscrl_jax.eval.dci import compute_dci
from wscrl_jax.eval.interventions import intervention_metrics
from wscrl_jax.lcm.objective import LOG_MEAN_VARS
from wscrl_jax.lcm.phases import EVAL_PHASE, IWAE_PHASE, eval_loss_weights

log = logging.getLogger("wscrl_jax")


@partial(jax.jit, static_argnums=(0,))
def _encode(method, params, model_state, x):
    return method.encode_to_causal(params, model_state, x)


@partial(jax.jit, static_argnums=(0, 5))
def _test_outputs(method, params, model_state, batch, key, phase, beta):
    loss_b, outputs = method.per_sample(params, model_state, batch["x1"], batch["x2"], key,
                                        eval_loss_weights(beta), phase)
    means = {k: jnp.mean(outputs[k], 0) for k in LOG_MEAN_VARS if k in outputs}
    means["loss"] = jnp.mean(loss_b)
    if "solution_std" in outputs:
        means["solution_std"] = jnp.mean(outputs["solution_std"], axis=(0, 1))
    return means, outputs.get("intervention_posterior")


@partial(jax.jit, static_argnums=(0, 5))
def _iwae_log_likelihood(method, params, model_state, batch, key, n_samples):
    """IWAE estimate [B]: logmeanexp over n copies of -loss_b at the forward defaults
    (full Gaussian constants, stochastic encoder, interventions modelled; gotcha 15)."""
    def one_copy(k):
        loss_b, _ = method.per_sample(params, model_state, batch["x1"], batch["x2"], k,
                                      eval_loss_weights(1.0), IWAE_PHASE)
        return -loss_b
    values = jax.lax.map(one_copy, jax.random.split(key, n_samples))
    return jax.scipy.special.logsumexp(values, axis=0) - math.log(n_samples)


def evaluate_lcm(method, params, model_state, data, key) -> Dict[str, float]:
    """Metrics of one member, in the reference's CSV column order (DCI first, nll last)."""
    cfg = method.config
    split = data[cfg.eval.eval_partition]
    codes_train = _encode(method, params, model_state, data["dci_train"]["x1"])
    codes_test = _encode(method, params, model_state, split["x1"])
    start = time.time()
    dci = compute_dci(codes_train, data["dci_train"]["z1"], codes_test, split["z1"],
                      random_state=cfg.eval.dci_random_state)
    log.info("DCI (%d training codes) in %.1f s", codes_train.shape[0], time.time() - start)
    metrics = {f"causal_{k}": v for k, v in dci.items()}

    phase = EVAL_PHASE._replace(full_likelihood=cfg.eval.full_likelihood,
                                likelihood_reduction=cfg.eval.likelihood_reduction)
    k_test, k_iwae = jax.random.split(key)
    batch = {"x1": split["x1"], "x2": split["x2"]}
    means, q = _test_outputs(method, params, model_state, batch, k_test, phase,
                             float(cfg.eval.beta))
    means = jax.tree_util.tree_map(np.asarray, means)
    if q is not None:
        metrics.update(intervention_metrics(np.asarray(q), np.asarray(split["intervention_labels"]),
                                            method.dim_z))
        metrics = _move_after(metrics, "intervention_entropy_deterministic", "loss",
                              float(means["loss"]))
    else:
        metrics["loss"] = float(means["loss"])
    if "solution_std" in means:
        metrics.update({f"solution_std_{i}": float(v) for i, v in enumerate(means["solution_std"])})
    metrics.update({k: float(means[k]) for k in LOG_MEAN_VARS if k in means})
    ll = _iwae_log_likelihood(method, params, model_state, batch, k_iwae,
                              int(cfg.training.iwae_samples))
    metrics["nll"] = float(-jnp.mean(ll))
    return metrics


def _move_after(metrics: dict, anchor: str, key: str, value) -> dict:
    """Inserts key right after anchor (dicts keep insertion order)."""
    out = {}
    for k, v in metrics.items():
        out[k] = v
        if k == anchor:
            out[key] = value
    return out
