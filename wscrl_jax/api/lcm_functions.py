"""One member's functions of a trained WS-CRL model (ILCM, dVAE, beta-VAE, ELCM), pure and
jittable: the reference's `encode_to_noise`, `encode_to_causal`, `decode_noise`,
`decode_causal`, `encode_decode_pair`, `sample`, `log_likelihood` (`ws_crl/lcm/ilcm.py`,
`elcm.py`, `base.py`), and the counterfactual `intervene`.

Every function is `f(method, variables, key, *rows, *shared)` with variables = {"params",
"model_state"} of one member and rows [n, ...]; `api/batching.py` vmaps it over members and
chunks the rows. `deterministic` functions use the encoder means (as the reference's
evaluation does) and ignore the key.

Model kinds (`kind`): "ilcm" (ILCM and dVAE: noise encoder, implicit SCM of solution
functions), "elcm" (encoder of the causal variables, explicit SCM on a learned graph),
"betavae" (no SCM: causal variables = noise = the codes).
"""

import math

import jax
import jax.numpy as jnp

from wscrl_jax.causal.interventions import intervention_masks
from wscrl_jax.lcm.phases import IWAE_PHASE, eval_loss_weights
from wscrl_jax.nn.gaussian import reparameterize


def _apply(method, variables, fn, *args):
    """fn(bound module, *args) with the member's parameters."""
    return method.module.apply({"params": variables["params"]}, *args, method=fn)


def model_kind(method) -> str:
    """"ilcm" (also the dVAE), "elcm" or "betavae"."""
    if method.has_solution_functions:
        return "ilcm"
    return "elcm" if method.graph_kind is not None else "betavae"


def _encoder_output(method, variables, key, x, deterministic: bool):
    """The encoder's mean, or a sample of its Gaussian, [n, dim_z]."""
    mean, std = _apply(method, variables, lambda m, x: m.encoder(x), x)
    return mean if deterministic else reparameterize(key, mean, std)


def _elcm_adjacency(method, variables, n: int):
    """The ELCM's hard learned graph for n rows [n, d, d] (the reference's deterministic mode)."""
    a = _apply(method, variables, lambda m: m.hard_graph())
    return jnp.broadcast_to(a, (n,) + a.shape)


# ---------------------------------------------------------------- noise <-> causal


def noise_to_causal(method, variables, e):
    """Noise e [n, d] -> causal variables [n, d]."""
    kind = model_kind(method)
    if kind == "ilcm":
        ms = variables["model_state"]
        return _apply(method, variables,
                      lambda m, e: m.scm.noise_to_causal(e, m.context_masks(ms)), e)
    if kind == "elcm":
        adjacency = _elcm_adjacency(method, variables, e.shape[0])
        return _apply(method, variables, lambda m, e: m.scm.noise_to_causal(e, adjacency), e)
    return e


def causal_to_noise(method, variables, z):
    """Causal variables z [n, d] -> noise [n, d]. ILCM: the reference's `causal_to_noise`,
    solution functions run forward in the topological order of the model state, each
    variable's context reading the noise already computed (and z for the variables not yet
    reached: exact when the contexts respect the order)."""
    kind = model_kind(method)
    if kind == "elcm":
        adjacency = _elcm_adjacency(method, variables, z.shape[0])
        return _apply(method, variables, lambda m, z: m.scm.causal_to_noise(z, adjacency), z)
    if kind == "betavae":
        return z
    ms = variables["model_state"]
    order = ms["order"]

    def forward(m, z):
        masks = m.context_masks(ms)
        conditioning = z
        columns = jnp.arange(z.shape[1])
        for position in range(z.shape[1]):
            i = order[position]
            e_i = m.scm.solution_component(i, z[:, i], conditioning, masks[i], False)
            conditioning = jnp.where(columns == i, e_i[:, None], conditioning)
        return conditioning
    return _apply(method, variables, forward, z)


# ---------------------------------------------------------------- encoders and decoders


def encode_to_noise(method, variables, key, x, deterministic=True):
    """Observations x [n, dim_x] -> noise [n, dim_z] (ELCM: `causal_to_noise` of its codes)."""
    h = _encoder_output(method, variables, key, x, deterministic)
    return causal_to_noise(method, variables, h) if model_kind(method) == "elcm" else h


def encode_to_causal(method, variables, key, x, deterministic=True):
    """Observations x [n, dim_x] -> causal variables [n, dim_z] (the codes DCI evaluates)."""
    h = _encoder_output(method, variables, key, x, deterministic)
    return h if model_kind(method) != "ilcm" else noise_to_causal(method, variables, h)


def decode_noise(method, variables, key, e):
    """Noise e [n, dim_z] -> decoder means [n, dim_x]."""
    del key
    h = noise_to_causal(method, variables, e) if model_kind(method) == "elcm" else e
    return _apply(method, variables, lambda m, h: m.decoder(h)[0], h)


def decode_causal(method, variables, key, z):
    """Causal variables z [n, dim_z] -> decoder means [n, dim_x]."""
    del key
    h = causal_to_noise(method, variables, z) if model_kind(method) == "ilcm" else z
    return _apply(method, variables, lambda m, h: m.decoder(h)[0], h)


def encode_decode(method, variables, key, x, deterministic=True):
    """Reconstructions [n, dim_x]: the decoder means of the encoder means (or a sample)."""
    h = _encoder_output(method, variables, key, x, deterministic)
    return _apply(method, variables, lambda m, h: m.decoder(h)[0], h)


# ---------------------------------------------------------------- pairs and interventions


def encode_decode_pair(method, variables, key, x1, x2):
    """A pair through the model under its most likely intervention (the reference's
    `encode_decode_pair`, deterministic): {x1_reco, x2_reco [n, dim_x], e1_mean, e2_mean,
    e1_proj, e2_proj [n, dim_z], intervention_posterior [n, K], intervention [n] (label: 0 no
    intervention, k: variable k - 1), intervention_mask [n, dim_z]}. ILCM: the projection's
    averaging weights are drawn from `key` where `model.averaging_strategy` is stochastic (as
    the reference draws them even here). ELCM: the posterior of its explicit SCM's prior."""
    kind = model_kind(method)
    masks = jnp.asarray(intervention_masks(method.dim_z))
    if kind == "ilcm":
        def pair(m, x1, x2):
            (mu1, s1), (mu2, s2) = m.encoder(x1), m.encoder(x2)
            q = m.int_encoder(mu1, mu2, 1e-4)
            label = jnp.argmax(q, -1)
            e1, _, e2, _ = m._project(mu1, s1, mu2, s2, masks[label])
            return mu1, mu2, e1, e2, q, label
        mu1, mu2, e1, e2, q, label = method.module.apply(
            {"params": variables["params"]}, x1, x2, method=pair, rngs={"sample": key})
    elif kind == "elcm":
        mu1 = _encoder_output(method, variables, key, x1, True)
        mu2 = _encoder_output(method, variables, key, x2, True)
        q = elcm_intervention_posterior(method, variables, mu1, mu2)
        label = jnp.argmax(q, -1)
        e1, e2 = mu1, mu2
    else:
        raise ValueError("the beta-VAE has no intervention posterior")
    decode = lambda e: decode_noise(method, variables, key, e)  # noqa: E731
    return {"x1_reco": decode(e1), "x2_reco": decode(e2), "e1_mean": mu1, "e2_mean": mu2,
            "e1_proj": e1, "e2_proj": e2, "intervention_posterior": q,
            "intervention": label.astype(jnp.int32), "intervention_mask": masks[label]}


def elcm_intervention_posterior(method, variables, z1, z2):
    """softmax_k log p(z1, z2 | I_k, A) [n, K] on the hard learned graph (`ELCM.encode_decode_pair`),
    at the run's `model.scm.manifold_thickness`."""
    masks = jnp.asarray(intervention_masks(method.dim_z))
    n, k = z1.shape[0], masks.shape[0]
    adjacency = _elcm_adjacency(method, variables, n)
    thickness = float(method.config.model.scm.manifold_thickness)

    def per_target(m, z1, z2):
        tile = lambda a: jnp.tile(a, (k,) + (1,) * (a.ndim - 1))  # noqa: E731  target-major
        return m.scm.log_prob_weakly_supervised(
            tile(z1), tile(z2), jnp.repeat(masks, n, axis=0), tile(adjacency),
            thickness)["scm_log_prior"]
    logp = _apply(method, variables, per_target, z1, z2).reshape(k, n).T
    return jax.nn.softmax(logp, axis=-1)


def intervene(method, variables, key, x, value, target):
    """Counterfactual observations [n, dim_x] of x [n, dim_x] under do(z_target = value)
    (value [n, 1], target a traced int), the rest of each observation's noise kept; also the
    counterfactual causal variables [n, dim_z].

    ILCM / dVAE: the target's noise becomes its solution function run forward at `value`
    (context: the other noise, which it does not read itself), the other noise is kept, and the
    noise is decoded; re-encoded, the target's causal value is `value` and the variables whose
    solution functions read the target's noise (its descendants) move. ELCM: the explicit SCM's
    abduction (noise of the encoded causal variables), action (z_target = value) and prediction
    (every other variable from its own noise and its parents, d sweeps: exact on an acyclic
    graph), decoded."""
    value = value[:, 0]
    columns = jnp.arange(method.dim_z)
    hit = columns == target
    if model_kind(method) == "ilcm":
        ms = variables["model_state"]

        def counterfactual(m, x):
            e = m.encoder(x)[0]
            masks = m.context_masks(ms)
            e_t = m.scm.solution_component(target, value, e, masks[target], False)
            e_cf = jnp.where(hit, e_t[:, None], e)
            return m.decoder(e_cf)[0], m.scm.noise_to_causal(e_cf, masks)
        return _apply(method, variables, counterfactual, x)
    z = _encoder_output(method, variables, key, x, True)
    adjacency = _elcm_adjacency(method, variables, z.shape[0])

    def counterfactual(m, z):
        eps = m.scm.causal_to_noise(z, adjacency)
        z_cf = jnp.where(hit, value[:, None], z)
        for _ in range(method.dim_z):
            scale, shift = m.scm.scale_shift(z_cf, adjacency)
            z_cf = jnp.where(hit, value[:, None], eps * scale + shift)
        return m.decoder(z_cf)[0], z_cf
    return _apply(method, variables, counterfactual, z)


# ---------------------------------------------------------------- the generative model


def sample(method, variables, key, rows):
    """Pairs from the learned model (rows [n, 0] only set n): {x1, x2 [n, dim_x] (decoder
    means), z1, z2, e1, e2 [n, dim_z], intervention [n] (label, uniform over no intervention
    and each variable)}. ILCM (the reference's noise-centric sampler,
    `sample_noise_weakly_supervised`, at zero manifold thickness): e1 ~ N(0, 1); a target's e2
    is its solution function run forward from a fresh N(0, 1) value in the context of e1, the
    other e2 copy e1. ELCM: the explicit SCM solved from N(0, 1) noise, targets from its
    intervention transforms. beta-VAE: its unstructured prior, z1 and z2 independent N(0, 1)."""
    n, d = rows.shape[0], method.dim_z
    k_label, k1, k2 = jax.random.split(key, 3)
    masks = jnp.asarray(intervention_masks(d))
    label = jax.random.randint(k_label, (n,), 0, masks.shape[0])
    mask = masks[label]
    e1 = jax.random.normal(k1, (n, d))
    u = jax.random.normal(k2, (n, d))
    kind = model_kind(method)
    if kind == "ilcm":
        ms = variables["model_state"]

        def targets(m, e1, u):
            masks_c = m.context_masks(ms)
            return jnp.stack([m.scm.solution_component(i, u[:, i], e1, masks_c[i], False)
                              for i in range(d)], axis=1)
        e2 = mask * _apply(method, variables, targets, e1, u) + (1 - mask) * e1
        z1, z2 = noise_to_causal(method, variables, e1), noise_to_causal(method, variables, e2)
    elif kind == "elcm":
        adjacency = _elcm_adjacency(method, variables, n)

        def solve(m, e1, u):
            z1 = m.scm.solve(e1, adjacency)[0]
            z2 = m.scm.solve(e1, adjacency, mask, u)[0]
            return z1, z2
        z1, z2 = _apply(method, variables, solve, e1, u)
        e2 = jnp.where(mask > 0, u, e1)
    else:
        z1, z2 = e1, u
        e2 = u
    decode = lambda z: decode_causal(method, variables, key, z)  # noqa: E731
    return {"x1": decode(z1), "x2": decode(z2), "z1": z1, "z2": z2, "e1": e1, "e2": e2,
            "intervention": label.astype(jnp.int32)}


def log_likelihood(method, variables, key, x1, x2, n_samples: int):
    """IWAE estimate of log p(x1, x2) [n] with n_samples latent samples (the reference's
    `log_likelihood`: the forward defaults, beta 1; the run's evaluation's `nll` is minus its
    mean over the test split)."""
    weights = eval_loss_weights(1.0, float(method.config.model.scm.manifold_thickness))

    def one_copy(k):
        loss_b, _ = method.per_sample(variables["params"], variables["model_state"], x1, x2, k,
                                      weights, IWAE_PHASE)
        return -loss_b
    values = jax.lax.map(one_copy, jax.random.split(key, n_samples))
    return jax.scipy.special.logsumexp(values, axis=0) - math.log(n_samples)

