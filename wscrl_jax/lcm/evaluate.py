"""Final evaluation of trained latent causal models (`experiments/scaling.py: evaluate`),
every member of a sweep together.

DCI on causal codes (regressors fit on `dci_train`, scored on the evaluation split), the
graphs (`lcm/graphs.py`), then the test-set loss terms on the whole split as one batch and the
IWAE negative log-likelihood; where the data carry it, `flow_nll`, the ground truth's exact NLL
of the same pairs (`causal/flow_lcm.py`), the floor that `nll` approaches. Metrics whose ground
truth the data lack (own pairs, `data/own_pairs.py`) are left out, and one log line says which
(`skipped_metrics`).
"""

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Dict, List, Union

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from wscrl_jax.eval.dci import compute_dci_members, resolve_dci_backend
from wscrl_jax.eval.interventions import intervention_metrics_members
from wscrl_jax.lcm.graphs import graph_programs, learned_graph_metrics
from wscrl_jax.lcm.objective import LOG_MEAN_VARS
from wscrl_jax.lcm.phases import EVAL_PHASE, IWAE_PHASE, eval_loss_weights
from wscrl_jax.train import streams
from wscrl_jax.train.method import MemberNotEvaluated
from wscrl_jax.train.run_once import run_once_jit

log = logging.getLogger("wscrl_jax")


def _eval_weights(method, beta):
    return eval_loss_weights(beta, float(method.config.model.scm.manifold_thickness))


@partial(jax.jit, static_argnums=(0,))
def _encode(method, params, model_state, x):
    """Causal codes of every member: x [M, N, dim_x] -> [M, N, dim_z]."""
    return jax.vmap(method.encode_to_causal)(params, model_state, x)


@partial(jax.jit, static_argnums=(0,))
def _encode_noise(method, params, x):
    """Noise codes (encoder means) of every member: x [M, N, dim_x] -> [M, N, dim_z]."""
    return jax.vmap(method.encode_to_noise)(params, x)


@run_once_jit(static_argnums=(0, 5))
def _test_outputs(method, params, model_state, batch, key, phase, beta):
    """Per member, the mean loss terms of the whole split as one batch, and the intervention
    posterior [M, N, K] (or None)."""
    def one(params, model_state, batch, key):
        loss_b, outputs = method.per_sample(params, model_state, batch["x1"], batch["x2"], key,
                                            _eval_weights(method, beta), phase)
        means = {k: jnp.mean(outputs[k], 0) for k in LOG_MEAN_VARS if k in outputs}
        means["loss"] = jnp.mean(loss_b)
        if "solution_std" in outputs:
            means["solution_std"] = jnp.mean(outputs["solution_std"], axis=(0, 1))
        return means, outputs.get("intervention_posterior")
    return jax.vmap(one)(params, model_state, batch, key)


@run_once_jit(static_argnums=(0, 5))
def _iwae_log_likelihood(method, params, model_state, batch, key, n_samples):
    """IWAE estimate [M, B]: logmeanexp over n copies of -loss_b at the forward defaults
    (full Gaussian constants, stochastic encoder, interventions modelled; ws-crl gotcha 15)."""
    def one(params, model_state, batch, key):
        def one_copy(k):
            loss_b, _ = method.per_sample(params, model_state, batch["x1"], batch["x2"], k,
                                          _eval_weights(method, 1.0), IWAE_PHASE)
            return -loss_b
        values = jax.lax.map(one_copy, jax.random.split(key, n_samples))
        return jax.scipy.special.logsumexp(values, axis=0) - math.log(n_samples)
    return jax.vmap(one)(params, model_state, batch, key)


def code_inputs(data, split):
    """The observations encoded for DCI: the `dci_train` split's x1, then the evaluation
    split's, [M, N_dci + N_eval, dim_x] (both in one call: one compilation)."""
    return jnp.concatenate([data["dci_train"]["x1"], split["x1"]], axis=1)


def graph_keys(keys):
    """The graph evaluations' keys [M, 2] from the members' evaluation keys [M, 2]."""
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, streams.GRAPH_EVALUATION)


def loss_stage_keys(keys):
    """(test-loss keys, IWAE keys), [M, 2] each, from the members' evaluation keys [M, 2]."""
    return jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)


def eval_phase(cfg):
    """The static phase of the test-loss terms, from `eval`'s likelihood and graph options."""
    return EVAL_PHASE._replace(full_likelihood=cfg.eval.full_likelihood,
                               likelihood_reduction=cfg.eval.likelihood_reduction,
                               graph_mode=cfg.eval.graph_sampling.mode,
                               graph_temperature=float(cfg.eval.graph_sampling.temperature),
                               graph_samples=int(cfg.eval.graph_sampling.samples))


def with_graphs(method) -> bool:
    """Whether the evaluation has graph stages (`eval.graphs`, and a model with solution
    functions or a learned graph)."""
    return bool(method.config.eval.graphs) and (method.has_solution_functions
                                                or method.graph_kind is not None)


def compile_lcm_evaluation(method, params, model_state, data, keys) -> None:
    """Compiles the programs `evaluate_lcm_members` runs on these arguments without running
    them (`Method.evaluate`'s `compile_only`), the last it runs first: beside an evaluation
    that has started (`eval.compile_ahead=end`), which compiles its first programs itself,
    the two meet in the middle. params, model_state: the stack's `jax.ShapeDtypeStruct`s;
    data, keys: the arrays the evaluation gets (arrays, not their
    shapes, where the evaluation passes arrays: a program compiled for a committed argument
    is not the one an uncommitted argument, such as a key made on the host, calls)."""
    cfg = method.config
    split = data[cfg.eval.eval_partition]
    inputs = data["dci_train"]["x1"]
    inputs = jax.ShapeDtypeStruct(
        (inputs.shape[0], inputs.shape[1] + split["x1"].shape[1]) + inputs.shape[2:],
        inputs.dtype, sharding=inputs.sharding)
    programs = [(_encode, (method, params, model_state, inputs))]
    if "e1" in split and "z1" in split:
        programs.append((_encode_noise, (method, params, inputs)))
    if with_graphs(method):
        programs += graph_programs(method, params, model_state, split, graph_keys(keys))
    k_test, k_iwae = loss_stage_keys(keys)
    batch = {"x1": split["x1"], "x2": split["x2"]}
    programs += [(_test_outputs, (method, params, model_state, batch, k_test, eval_phase(cfg),
                                  float(cfg.eval.beta))),
                 (_iwae_log_likelihood, (method, params, model_state, batch, k_iwae,
                                         int(cfg.training.iwae_samples)))]
    for program, args in reversed(programs):  # last first: see the docstring
        program.lower(*args).compile()


def evaluate_lcm_members(method, params, model_state, data, keys, *, real: int,
                         progress: bool) -> List[Union[Dict[str, float], MemberNotEvaluated]]:
    """Metrics of every member ([M, ...] arrays, keys [M, 2]), in the reference's CSV column
    order (DCI first, nll last); a member whose codes are not finite gets a
    `MemberNotEvaluated`. real: the first `real` members are the sweep's, the others inert
    padding. progress: a bar over the stages.

    Every stage is one compiled call for all members: causal codes, DCI
    (`eval.dci_backend`, in a background thread beside the later stages; the real members only,
    since its fits are shared out over threads where padding would only add fits: the
    padding's rows are the last real member's, whose copy it is), the graphs (`lcm/graphs.py`,
    `eval.graphs`: post-hoc ENCO and the implicit graph of models with solution functions, the
    graph a model trained with, their distances to the truth), the test-set loss terms on the whole split as one batch, the IWAE NLL. The
    intervention metrics (permutations of d <= 5 labels) run on the host, for all members at
    once (`eval/interventions.py`)."""
    cfg = method.config
    split = data[cfg.eval.eval_partition]
    num_members = keys.shape[0]
    graphs = with_graphs(method)
    bar = tqdm(total=6 if graphs else 4, disable=not progress, unit="stage",
               dynamic_ncols=True, leave=False)

    bar.set_description("evaluation: causal codes")
    n_train = data["dci_train"]["x1"].shape[1]  # both splits in one call (one compilation)
    # on the host: slices and checks in numpy compile nothing (eager jax ops compile one
    # program each, 0.05-0.1 s on a CPU)
    codes = np.asarray(_encode(method, params, model_state, code_inputs(data, split)))
    codes_train, codes_test = codes[:, :n_train], codes[:, n_train:]
    finite = np.all(np.isfinite(codes), axis=(1, 2))
    bar.update()

    # The DCI fits run in a background thread (scikit-learn's trees, the native loops and XLA
    # all release the GIL) while the stages below compile and run: the compilations are
    # single-threaded, so a core would otherwise idle through them. Only the graphs' matching
    # of codes to factors waits for the DCI.
    backend = resolve_dci_backend(cfg.eval.dci_backend)
    noise = None
    if "e1" in split and "z1" in split:  # true noise known (CausalCircuit): DCI of the means
        noise = _encode_noise(method, params, code_inputs(data, split))[:real]
    background = ThreadPoolExecutor(max_workers=1)
    pending = None
    if "z1" in split:  # true causal variables known
        pending = background.submit(_dci_stage, cfg, backend, codes_train, codes_test, finite,
                                    noise, data, split, real)

    def dci_results():
        """(dci, noise_dci) of every member, waiting for the background fits; (None, None)
        without true causal variables."""
        if pending is None:
            return None, None
        dci, noise_dci, seconds = pending.result()
        if not hasattr(dci_results, "logged"):
            log.info("DCI of %d member(s) (%d training codes each, %s) in %.1f s", real,
                     codes_train.shape[1], backend, seconds)
            dci_results.logged = True
        pad = num_members - real  # the inert padding's rows: the last real member's
        if noise_dci is not None:
            noise_dci = noise_dci + noise_dci[-1:] * pad
        return dci + dci[-1:] * pad, noise_dci

    try:
        results = _evaluate_stages(method, params, model_state, data, keys, bar, split, finite,
                                   graphs, backend, dci_results)
    finally:
        background.shutdown(wait=True)
        bar.close()
    return results


def _dci_stage(cfg, backend, codes_train, codes_test, finite, noise, data, split, real):
    """DCI of the first `real` members' causal codes (and of their noise codes [M, N, d] where
    not None): (metric dicts, noise metric dicts or None, seconds). The padding members are
    left out: the fits are shared out over threads, where they would only add fits."""
    start = time.time()
    ok = finite[:real, None, None]  # members with non-finite codes: fit on zeros, then dropped
    dci = compute_dci_members(np.where(ok, codes_train[:real], 0.0),
                              data["dci_train"]["z1"][:real],
                              np.where(ok, codes_test[:real], 0.0), split["z1"][:real],
                              backend=backend, random_state=cfg.eval.dci_random_state)
    noise_dci = None
    if noise is not None:
        n_train = codes_train.shape[1]
        noise = np.asarray(noise)
        noise = np.where(np.all(np.isfinite(noise), axis=(1, 2))[:, None, None], noise, 0.0)
        noise_dci = compute_dci_members(noise[:, :n_train], data["dci_train"]["e1"][:real],
                                        noise[:, n_train:], split["e1"][:real],
                                        backend=backend, random_state=cfg.eval.dci_random_state)
    return dci, noise_dci, time.time() - start


def _evaluate_stages(method, params, model_state, data, keys, bar, split, finite, graphs,
                     backend, dci_results):
    """The stages after the causal codes (see `evaluate_lcm_members`); `dci_results()` gives
    the DCI metrics (of `backend`), once its background fits are done."""
    cfg = method.config
    num_members = keys.shape[0]
    graph_columns = [{}] * num_members
    if graphs:
        truth = data.get("truth", {}).get("adjacency")
        graph_columns = learned_graph_metrics(method, params, model_state, split, truth,
                                              graph_keys(keys), lambda: dci_results()[0], bar)

    bar.set_description("evaluation: test loss")
    k_test, k_iwae = loss_stage_keys(keys)
    batch = {"x1": split["x1"], "x2": split["x2"]}
    means, q = jax.device_get(_test_outputs(method, params, model_state, batch, k_test,
                                            eval_phase(cfg), float(cfg.eval.beta)))
    interventions = (None if q is None or "intervention_labels" not in split
                     else intervention_metrics_members(
                         q, jax.device_get(split["intervention_labels"]), method.dim_z))
    skipped = skipped_metrics(split, "truth" in data, graphs, q is not None)
    if skipped:
        log.info("Metrics skipped, the data lack their ground truth: %s", "; ".join(skipped))
    bar.update()

    bar.set_description("evaluation: IWAE NLL")
    nll = -np.asarray(jnp.mean(_iwae_log_likelihood(method, params, model_state, batch, k_iwae,
                                                    int(cfg.training.iwae_samples)), axis=1))
    bar.update()

    bar.set_description(f"evaluation: DCI ({backend})" if "z1" in split else "evaluation")
    dci, noise_dci = dci_results()
    bar.update()

    results = []
    for i in range(num_members):
        if not finite[i]:
            results.append(MemberNotEvaluated("its causal codes are not finite"))
            continue
        metrics = {} if noise_dci is None else {f"noise_{k}": v for k, v in noise_dci[i].items()}
        if dci is not None:
            metrics.update({f"causal_{k}": v for k, v in dci[i].items()})
        metrics.update(graph_columns[i])
        member_means = {k: v[i] for k, v in means.items()}
        if interventions is not None:
            metrics.update(interventions[i])
            metrics = _move_after(metrics, "intervention_entropy_deterministic", "loss",
                                  float(member_means["loss"]))
        else:
            metrics["loss"] = float(member_means["loss"])
        if "solution_std" in member_means:
            metrics.update({f"solution_std_{j}": float(v)
                            for j, v in enumerate(member_means["solution_std"])})
        metrics.update({k: float(member_means[k]) for k in LOG_MEAN_VARS if k in member_means})
        metrics["nll"] = float(nll[i])
        if "true_log_prob" in split:  # the ground truth's own NLL of the split, for comparison
            metrics["flow_nll"] = -float(np.mean(np.asarray(split["true_log_prob"][i])))
        results.append(metrics)
    return results


def skipped_metrics(split, true_graph: bool, with_graphs: bool,
                    intervention_posterior: bool) -> List[str]:
    """What the evaluation leaves out for want of ground truth in the evaluation `split`
    ({name: array}), one phrase each: DCI without `z1`, the intervention metrics without
    `intervention_labels` (models with an intervention posterior), the graph matching and SHDs
    without a true graph (models with graphs)."""
    out = []
    if "z1" not in split:
        out.append("DCI (causal_*) and the graph matching need the true causal variables z1")
    if intervention_posterior and "intervention_labels" not in split:
        out.append("the intervention metrics need intervention_labels")
    if with_graphs and not true_graph:
        out.append("the structural Hamming distances (*_shd) need true_graph and z1")
    return out


def _move_after(metrics: dict, anchor: str, key: str, value) -> dict:
    """Inserts key right after anchor (dicts keep insertion order)."""
    out = {}
    for k, v in metrics.items():
        out[k] = v
        if k == anchor:
            out[key] = value
    return out
