"""Counterfactuals of a trained ILCM: train the README's smoke run (or reuse its workdir), load
it with `wscrl_jax.load`, intervene on each causal variable of test observations and draw, in
causal-variable space, every variable before against after do(z_i = v).

    python examples/counterfactuals.py [--workdir runs/ilcm3] [--tiny] [--n 1000]

Row i of the figure (WORKDIR/figures/counterfactuals.png) is do(z_i = v) with v drawn from z_i's
test marginal; panel j plots z_j of the re-encoded counterfactual against z_j of the
observation: the target lies on v, non-descendants of i stay on the diagonal, descendants move.
The script also prints the medians of `counterfactual_errors`. `--tiny` trains a seconds-long
version (for tests).
"""

import argparse
import os

import numpy as np

import wscrl_jax


def smoke_config(tiny: bool = False):
    """The README's smoke run (3 variables, seeds 42); `tiny`: shrunk to seconds."""
    c = wscrl_jax.get_config("scaling.py:ilcm,fast",
                             {"data.dim_z": 3, "seed": 42, "data.nature.seed": 42})
    if tiny:
        c.data.samples.train, c.data.samples.val, c.data.samples.test = 1280, 256, 256
        for net in ("encoder", "decoder", "scm"):
            c.model[net].hidden_units = 16
        c.training.epochs = 2
        c.training.pretrain_epochs = None  # one phase: one compilation
        c.training.model_interventions_after_epoch = None
        c.training.deterministic_intervention_encoder_after_epoch = None
        c.training.iwae_samples = 2
        c.training.steps_per_call = 100
        c.checkpoint.every_n_steps = 20
        c.checkpoint.async_save = False
        c.eval.graphs = False
    return c


def descendants(adjacency):
    """[d, d] bool: D[i, j] = j is a descendant of i (A[i, j]: edge i -> j)."""
    reach = adjacency.astype(bool)
    for _ in range(len(adjacency)):
        reach = reach | ((reach.astype(int) @ adjacency.astype(int)) > 0)
    return reach


def counterfactual_errors(model, x, adjacency, seed: int = 0):
    """For each target i, medians over the observations x [N, dim_x] (in units of each
    variable's standard deviation over x), per member: `target` |z'_i - v|, `non_descendants`
    the largest over non-descendants j of |z'_j - z_j|, `descendants` the largest movement of a
    descendant (NaN without one), and `roundtrip` the largest over variables of the
    re-encoding error without intervention (encode, decode, encode), which bounds how still a
    non-descendant can stay. z' = the re-encoded intervene(x, i, v), v drawn from z_i's values
    over x. adjacency: the graph [(M,) d, d] whose descendants count. Returns {name: [M, d]}."""
    rng = np.random.default_rng(seed)
    z = model.encode_to_causal(x)
    z_rt = model.encode_to_causal(model.encode_decode(x))
    single = z.ndim == 2
    if single:  # a member axis of one
        z, z_rt = z[None], z_rt[None]
    adjacency = np.asarray(adjacency)
    adjacency = adjacency[None] if adjacency.ndim == 2 else adjacency
    members, _, d = z.shape
    std = z.std(axis=1, keepdims=True)  # [M, 1, d]
    roundtrip = np.median(np.abs(z_rt - z) / std, axis=1).max(-1)  # [M]
    out = {k: np.full((members, d), np.nan) for k in ("target", "non_descendants",
                                                         "descendants")}
    out["roundtrip"] = np.repeat(roundtrip[:, None], d, axis=1)
    for i in range(d):
        v = rng.permutation(z[:, :, i].T).T  # [M, N]: each member's own marginal
        # each member's counterfactuals ([M, N, dim_x]), re-encoded by that member
        z_cf = model.encode_to_causal(model.intervene(x, i, v[0] if single else v))
        z_cf = z_cf[None] if single else z_cf
        moved = np.median(np.abs(z_cf - z) / std, axis=1)  # [M, d]
        out["target"][:, i] = np.median(np.abs(z_cf[:, :, i] - v) / std[:, 0, i:i + 1], axis=1)
        for m in range(members):
            desc = descendants(adjacency[m])[i]
            others = [j for j in range(d) if j != i and not desc[j]]
            out["non_descendants"][m, i] = moved[m, others].max() if others else 0.0
            if desc.any():
                out["descendants"][m, i] = moved[m, desc].max()
    return out


def draw(path, z, z_cf_per_target, values):
    """Grid d x d: row i = do(z_i = v), panel j = z_j after against before."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    d = z.shape[1]
    fig, axes = plt.subplots(d, d, figsize=(2.6 * d, 2.6 * d), squeeze=False)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            ax.scatter(z[:, j], z_cf_per_target[i][:, j], s=3, alpha=0.5)
            lo, hi = np.percentile(z[:, j], [1, 99])
            ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
            if i == j:
                ax.scatter(z[:, j], values[i], s=1, color="red", alpha=0.3)
            ax.set_title(f"do(z{i}): z{j}", fontsize=8)
            ax.tick_params(labelsize=6)
    fig.supxlabel("before (encoded observation)")
    fig.supylabel("after do(z_i = v) (re-encoded counterfactual)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/ilcm3")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long run (tests)")
    parser.add_argument("--n", type=int, default=1000, help="test observations")
    args = parser.parse_args(argv)
    wscrl_jax.train(smoke_config(args.tiny), args.workdir)  # resumes / skips when finished
    model = wscrl_jax.load(args.workdir)
    x = model.dataset("test")["x1"][:args.n]
    z = model.encode_to_causal(x)
    rng = np.random.default_rng(0)
    values = [rng.permutation(z[:, i]) for i in range(model.dim_z)]
    after = [model.encode_to_causal(model.intervene(x, i, values[i]))
             for i in range(model.dim_z)]
    path = os.path.join(args.workdir, "figures", "counterfactuals.png")
    draw(path, z, after, values)
    try:
        adjacency = model.graph("implicit").adjacency
    except wscrl_jax.APIError:  # the run evaluated no graphs: compute the implicit one
        adjacency = model.graph("implicit", x1=x).adjacency
    errors = counterfactual_errors(model, x, adjacency)
    for name, values_ in errors.items():
        print(f"{name}: " + ", ".join(f"{v:.3f}" for v in values_[0]))
    print(f"figure: {path}")
    return path, errors


if __name__ == "__main__":
    main()
