"""A trained WS-CRL model (ILCM, dVAE, beta-VAE, ELCM) as an object with the reference's
functions (`ws_crl/lcm/ilcm.py`, `elcm.py`, `base.py`), counterfactuals and graphs.

Every function takes numpy or JAX arrays of any number of rows ([N, ...], or [M, N, ...] with
each member's own rows), runs all members at once, and returns numpy with a leading member
axis where the model has several members. Observations are [N, dim_x] (scaling data), images
[N, R, R, 3] (uint8, or floats in [0, 1]) for CausalCircuit models, or for a two-stage run the
stage-1 inputs (its images): the stage-1 encoder's means are stage 2's observations, and its
decoder turns stage 2's decoded observations back into images (floats in [0, 1]).
"""

import functools
from typing import NamedTuple, Optional

import jax.numpy as jnp
import numpy as np

from wscrl_jax.api import lcm_functions as F
from wscrl_jax.api import lcm_graphs
from wscrl_jax.api.batching import DEFAULT_CHUNK, IMAGE_CHUNK, MemberRunner
from wscrl_jax.api.errors import as_observations, require
from wscrl_jax.train import checkpoint

KIND_NAMES = {"ilcm": "ILCM", "elcm": "ELCM", "betavae": "beta-VAE"}


class Intervention(NamedTuple):
    """`infer_intervention`: label [N] (0: no intervention, k: model variable k - 1),
    posterior [N, dim_z + 1] over the labels, x2_reco: the reconstruction of x2 under it."""

    label: np.ndarray
    posterior: np.ndarray
    x2_reco: np.ndarray


class LCMModel:
    """See the module docstring. Attributes: config (the run's), workdir, step, members
    ([(seed, data seed)] of the members held), kind ("ilcm" also for the dVAE, "elcm",
    "betavae"), dim_z, observation_shape, stage1 (the composed stage-1 model or None)."""

    def __init__(self, restored, stage1=None, chunk: Optional[int] = None):
        self.method = restored.method
        self.config = restored.config
        self.workdir, self.step = restored.workdir, restored.step
        self.members, self.member_indices = restored.members, restored.indices
        self.variables = restored.variables
        self.single = restored.single
        self.stage1 = stage1
        self.kind = F.model_kind(self.method)
        self.dim_z = int(self.method.dim_z)
        resolution = int(self.config.data.get("resolution", 0) or 0)
        self.images = self.config.method == "lcm_images"
        own_shape = (resolution, resolution, 3) if self.images else (int(self.method.dim_x),)
        self.observation_shape = stage1.observation_shape if stage1 is not None else own_shape
        default = IMAGE_CHUNK if self.images else DEFAULT_CHUNK
        self._runner = MemberRunner(self.variables, self.single, chunk or default)
        bind = lambda f: functools.partial(f, self.method)  # noqa: E731  one object: one jit
        self._fn = {name: bind(getattr(F, name)) for name in (
            "encode_to_noise", "encode_to_causal", "decode_noise", "decode_causal",
            "encode_decode", "encode_decode_pair", "intervene", "sample")}
        for det in (True, False):
            for name in ("encode_to_noise", "encode_to_causal", "encode_decode"):
                self._fn[(name, det)] = functools.partial(getattr(F, name), self.method,
                                                          deterministic=det)

    @property
    def num_members(self) -> int:
        return len(self.members)

    def __repr__(self):
        return (f"LCMModel({KIND_NAMES[self.kind]}, dim_z={self.dim_z}, {self.num_members} "
                f"member(s), step {self.step}, {self.workdir!r}"
                f"{', stage 1 composed' if self.stage1 is not None else ''})")

    # ------------------------------------------------------------------ inputs and outputs
    def _observations(self, x, name="x"):
        """Observations as the run's own model takes them: [(M,) N, dim_x] float32."""
        if self.stage1 is not None:
            codes = self.stage1.encode_to_noise(x)
            return np.asarray(codes, np.float32)
        x = as_observations(x, self.observation_shape, name, allow_uint8=self.images)
        if self.images:
            flat = x.reshape(x.shape[:-3] + (-1,))
            return flat.astype(np.float32) / 255.0 if x.dtype == np.uint8 else flat
        return x

    def _to_observations(self, x):
        """Decoded observations [.., dim_x] of the run's model -> what the user passed in."""
        if self.stage1 is not None:  # the stage-1 model has one member: rows side by side
            images = self.stage1.decode_noise(x.reshape(-1, x.shape[-1]))
            return images.reshape(x.shape[:-1] + images.shape[1:])
        if self.images:
            r = self.observation_shape[0]
            return np.clip(x.reshape(x.shape[:-1] + (r, r, 3)), 0.0, 1.0)
        return x

    def _latents(self, z, name):
        return as_observations(z, (self.dim_z,), name)

    def _run(self, name, rows, feature_ndims, shared=(), seed=None):
        return self._runner(self._fn[name], rows, feature_ndims, shared, seed)

    # ------------------------------------------------------------------ encoders, decoders
    def encode_to_noise(self, x, deterministic: bool = True, seed: int = 0):
        """Noise encodings [N, dim_z] of observations x: the encoder means, or with
        `deterministic=False` samples of the encoder's Gaussian (from `seed`). ELCM: the
        noise of its explicit SCM; beta-VAE: the codes."""
        return self._run(("encode_to_noise", bool(deterministic)), [self._observations(x)], [1],
                         seed=seed)

    def encode_to_causal(self, x, deterministic: bool = True, seed: int = 0):
        """Causal variables [N, dim_z] of observations x (ILCM: its solution functions applied
        to the noise encoding; the codes the run's DCI evaluates)."""
        return self._run(("encode_to_causal", bool(deterministic)), [self._observations(x)],
                         [1], seed=seed)

    def decode_noise(self, e):
        """Observations (decoder means) of noise encodings e [N, dim_z]."""
        return self._to_observations(self._run("decode_noise", [self._latents(e, "e")], [1]))

    def decode_causal(self, z):
        """Observations (decoder means) of causal variables z [N, dim_z] (ILCM: the
        reference's `causal_to_noise` in the model's topological order, then decoded)."""
        return self._to_observations(self._run("decode_causal", [self._latents(z, "z")], [1]))

    def encode_decode(self, x, deterministic: bool = True, seed: int = 0):
        """Reconstructions of observations x (decoder means of the encoder means)."""
        out = self._run(("encode_decode", bool(deterministic)), [self._observations(x)], [1],
                        seed=seed)
        return self._to_observations(out)

    # ------------------------------------------------------------------ pairs
    def encode_decode_pair(self, x1, x2, seed: int = 0) -> dict:
        """The reference's `encode_decode_pair` (deterministic) of pairs x1, x2: a dict of
        x1_reco, x2_reco (observations), e1_mean, e2_mean, e1_proj, e2_proj [N, dim_z] (noise
        means, and projected to the counterfactual manifold of the most likely intervention),
        intervention_posterior [N, dim_z + 1], intervention [N] (label), intervention_mask
        [N, dim_z]. `seed`: the ILCM projection's averaging weights where
        `model.averaging_strategy` is stochastic. Not for the beta-VAE (no intervention
        posterior)."""
        self._require_interventions("encode_decode_pair")
        out = self._run("encode_decode_pair", [self._observations(x1, "x1"),
                                               self._observations(x2, "x2")], [1, 1], seed=seed)
        out["x1_reco"] = self._to_observations(out["x1_reco"])
        out["x2_reco"] = self._to_observations(out["x2_reco"])
        return out

    def infer_intervention(self, x1, x2, seed: int = 0) -> Intervention:
        """Which variable the intervention between x1 and x2 hit (the reference's
        `infer_intervention`: the argmax of the intervention posterior): an `Intervention`
        (label [N], posterior [N, dim_z + 1], x2_reco)."""
        out = self.encode_decode_pair(x1, x2, seed)
        return Intervention(out["intervention"], out["intervention_posterior"], out["x2_reco"])

    def _require_interventions(self, what):
        require(self.kind != "betavae", f"{what}: the beta-VAE has no intervention posterior "
                "(its prior is unstructured); use an ILCM, dVAE or ELCM run")

    # ------------------------------------------------------------------ counterfactuals
    def intervene(self, x, target: int, value, return_causal: bool = False):
        """Counterfactual observations of x under do(z_target = value) (value: a number, [N], or
        [members, N] for each member its own),
        the rest of each observation's noise kept: ILCM / dVAE through its solution functions
        (descendants of the target move, non-descendants keep their values), ELCM through its
        explicit SCM. Returns observations like x (images for image and two-stage runs), and
        with `return_causal` also the counterfactual causal variables [N, dim_z]. Not for the
        beta-VAE, which has no causal model."""
        require(self.kind != "betavae", "intervene needs a causal model: the beta-VAE has none "
                "(no solution functions, no SCM; its codes are independent); use an ILCM, dVAE "
                "or ELCM run")
        require(isinstance(target, (int, np.integer)) and not isinstance(target, bool)
                and 0 <= target < self.dim_z, f"target={target!r} is out of range: this model "
                f"has {self.dim_z} causal variables, 0 to {self.dim_z - 1}")
        obs = self._observations(x)
        n = obs.shape[-2]
        value = np.asarray(value, np.float32)
        if value.ndim == 2:  # each member its own values
            require(value.shape == (self.num_members, n), f"value has shape {value.shape}; "
                    f"pass a number, [N] or [members, N] = [{self.num_members}, {n}]")
        else:
            require(value.ndim == 0 or value.shape == (n,), f"value has shape {value.shape}; "
                    f"pass a number, [N] = [{n}] or [members, N]")
            value = np.broadcast_to(value, (n,))
        values = as_observations(value[..., None], (1,), "value")
        x_cf, z_cf = self._run("intervene", [obs, values], [1, 1],
                               shared=(jnp.int32(target),))
        x_cf = self._to_observations(x_cf)
        return (x_cf, z_cf) if return_causal else x_cf

    # ------------------------------------------------------------------ generative model
    def sample(self, n: int, seed: int = 0) -> dict:
        """n pairs from the learned generative model: {x1, x2 (decoder means, as observations),
        z1, z2, e1, e2 [n, dim_z], intervention [n] (label)}; see `lcm_functions.sample`."""
        require(isinstance(n, (int, np.integer)) and n > 0, f"n={n!r} must be a positive integer")
        out = self._run("sample", [np.zeros((int(n), 0), np.float32)], [1], seed=seed)
        out["x1"] = self._to_observations(out["x1"])
        out["x2"] = self._to_observations(out["x2"])
        return out

    def log_likelihood(self, x1, x2, n_samples: Optional[int] = None, seed: int = 0):
        """IWAE estimate of log p(x1, x2) [N] of the run's model (its observations; for a
        two-stage run, of the stage-1 codes), with `n_samples` latent samples (default
        `training.iwae_samples`, as the run's `nll`)."""
        n_samples = int(n_samples or self.config.training.iwae_samples)
        key = ("log_likelihood", n_samples)
        if key not in self._fn:
            self._fn[key] = functools.partial(F.log_likelihood, self.method, n_samples=n_samples)
        return self._run(key, [self._observations(x1, "x1"), self._observations(x2, "x2")],
                         [1, 1], seed=seed)

    # ------------------------------------------------------------------ graphs
    def graph(self, kind: str = "implicit", x1=None, x2=None, seed: int = 0):
        """A `Graph` over the model's variables: "learned" (the graph the model trained with:
        ELCM, or an ILCM with model.scm.adjacency_matrix enco / dds / fixed_order), "enco"
        (post-hoc ENCO on pairs) or "implicit" (from the solution functions; d <= 5). ENCO and
        implicit: the run's evaluation's graphs (metrics/test_metrics.csv) or, given
        observations x1 (and x2 for ENCO, [N, ...] or per member), computed afresh with the
        run's settings. Matched to the true variables where the run knew them."""
        require(kind in lcm_graphs.GRAPH_KINDS, f"kind={kind!r} must be one of "
                f"{lcm_graphs.GRAPH_KINDS}")
        rows = lcm_graphs.metric_rows(self.workdir, self.step, self.member_indices,
                                      checkpoint.latest_step(self.workdir))
        if kind == "learned":
            require(self.method.graph_kind is not None, "this model trained without a learned "
                    "graph (model.scm.adjacency_matrix is not enco, dds or fixed_order); use "
                    "graph('implicit') or graph('enco')")
            learned = lcm_graphs.learned_adjacency(self.method, self.variables)
            return self._unstack(lcm_graphs.graph_from_rows(kind, rows, self.dim_z, 0.0, learned))
        require(self.method.has_solution_functions, f"the {kind} graph is evaluated for models "
                "with solution functions (ILCM, dVAE); this one has none")
        threshold = float(self.config.eval.implicit_graph_threshold)
        if x1 is None:
            require(rows is not None, f"the run wrote no metrics for step {self.step} (its "
                    f"evaluation did not run); pass observations to graph({kind!r}, x1=..."
                    f"{', x2=...' if kind == 'enco' else ''}) to compute it")
            return self._unstack(lcm_graphs.graph_from_rows(kind, rows, self.dim_z, threshold))
        require(kind != "implicit" or self.dim_z <= lcm_graphs.lcm_graphs.IMPLICIT_MAX_DIM,
                f"the implicit graph is evaluated for at most "
                f"{lcm_graphs.lcm_graphs.IMPLICIT_MAX_DIM} variables, as in the reference")
        require(kind != "enco" or x2 is not None, "graph('enco') needs pairs: pass x1 and x2")
        stacked = [self._per_member(self._observations(x1, "x1"))]
        if kind == "enco":
            stacked.append(self._per_member(self._observations(x2, "x2")))
        else:
            stacked.append(None)
        return self._unstack(lcm_graphs.compute_graph(self.method, self.variables, kind,
                                                      stacked[0], stacked[1], seed, rows))

    def _per_member(self, x):
        """[N, dim] -> [M, N, dim] (inputs without a member axis, the same for every member)."""
        if x.ndim == 3:
            return x
        return np.broadcast_to(x, (self.num_members,) + x.shape)

    def _unstack(self, graph):
        if not self.single:
            return graph
        return graph._replace(**{k: (v[0] if isinstance(v, np.ndarray) else v)
                                 for k, v in graph._asdict().items()})

    # ------------------------------------------------------------------ the run's data
    def dataset(self, split: str = "test") -> dict:
        """The run's own data of `split` (regenerated from each member's data seed, as training
        made them: "train", "dci_train", "val", "test"), {name: [N, ...]} with a member axis
        where the model has several. For a two-stage run these are stage 2's observations
        (the stage-1 codes); `model.stage1` takes images."""
        require(not self.images, "image runs read their data from the TFDS dataset on disk; "
                "use wscrl_jax.data.causalcircuit to read it")
        per_seed = {}
        out = []
        for _, data_seed in self.members:
            if data_seed not in per_seed:
                data = self.method.make_data(int(data_seed))
                require(split in data, f"split={split!r} is not one of "
                        f"{sorted(k for k in data if k != 'truth')}")
                per_seed[data_seed] = {k: np.asarray(v) for k, v in data[split].items()}
            out.append(per_seed[data_seed])
        if self.single:
            return out[0]
        return {k: np.stack([o[k] for o in out]) for k in out[0]}
