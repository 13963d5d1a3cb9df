"""Files an MD-CRL run writes after training: the stage-1 codes for stage 2 (reference:
`MixingAutoencoderPL.on_train_epoch_end` / `on_validation_epoch_end`, `BallsAutoencoderPL`'s)
and the figures (WORKDIR/figures/)."""

import importlib.util
import logging
import os

import jax
import numpy as np

from wscrl_jax.data.balls_render import to_float_images
from wscrl_jax.data.encoded import encoded_dir, write_encoded, write_encoded_meta
from wscrl_jax.plots import image_grid, invariant_scatter

log = logging.getLogger("wscrl_jax")


def write_outputs(method, workdir: str, state, data, members):
    """Figures (balls images and reconstructions, or the invariant scatter); stage 1 with
    `model.save_encoded_data`: the codes of every split of every member plus explicit
    metadata for stage 2 (`data/encoded.py`). Validation and test codes come from the final
    weights; training codes are the last epoch's online codes
    (`model.encoded_train_codes="online"`, reference, md-crl gotcha 12) or the final weights'
    (`"final"`). state, data: stacked over members."""
    if method.images:
        write_balls_figures(method, workdir, state, data, members)
    else:
        write_invariant_figure(method, workdir, state, data, members)
    if method.stage2 or not bool(method.config.model.save_encoded_data):
        return
    for index in range(len(members)):
        params, model_state = _member(state, index)
        arrays = {}
        for split, d in data.items():
            if split == "train" and method.online_codes:
                codes = model_state["online_codes"]
            else:
                codes = method.encode(params, model_state, d["x"][index])
            arrays[split] = {"z_hat": np.asarray(codes), "z": np.asarray(d["z"][index]),
                             "domain": np.asarray(d["domain"][index])}
        write_encoded(workdir, index, arrays)
    write_encoded_meta(workdir, {
        "latent_dim": method.latent, "num_domains": method.num_domains,
        "z_dim": method.true_z_dim, "z_dim_invariant": method.d_data, "x_dim": method.x_dim,
        "members": [list(m) for m in members],
        "splits": {split: int(d["x"].shape[1]) for split, d in data.items()},
        "train_codes": "online" if method.online_codes else "final",
        "source": "balls" if method.images else "mixing"})
    log.info("Stage-1 codes of %d member(s) written to %s", len(members), encoded_dir(workdir))


def write_invariant_figure(method, workdir: str, state, data, members, max_points: int = 2000):
    """WORKDIR/figures/invariant_scatter.png (`plots.invariant_scatter`): per member, the true
    invariant latents of (up to `max_points` of) the validation split against their least-squares
    linear read-out from the learned invariant block, the in-sample fit behind the R^2 metrics.
    state, data: stacked over members."""
    if importlib.util.find_spec("matplotlib") is None or "z" not in data["valid"]:
        return  # no figure without matplotlib or the true latents
    panels = []
    for index, (seed, data_seed) in enumerate(members):
        params, model_state = _member(state, index)
        x = data["valid"]["x"][index][:max_points]
        z = np.asarray(data["valid"]["z"][index][:max_points], np.float64)[:, :method.d_data]
        codes = np.asarray(method.encode(params, model_state, x), np.float64)[:, :method.d_inv]
        if not (np.all(np.isfinite(codes)) and np.all(np.isfinite(z))):
            continue
        design = np.concatenate([codes, np.ones((len(codes), 1))], axis=1)
        read = design @ np.linalg.lstsq(design, z, rcond=None)[0]
        panels.append((f"member {index} (seed {seed}, data {data_seed})", z, read))
    if panels:
        os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
        invariant_scatter(os.path.join(workdir, "figures", "invariant_scatter.png"), panels)


def _member(state, index: int):
    """(params, model state) of member `index` of a stacked state."""
    return jax.tree_util.tree_map(lambda a: a[index], (state.params, state.model_state))


def write_balls_figures(method, workdir: str, state, data, members, per_domain: int = 6):
    """WORKDIR/figures/balls_domains.png (validation images of the first member, a row per
    domain) and reconstructions.png (per member: 8 validation images over their eval-mode
    reconstructions). state, data: stacked over members."""
    if importlib.util.find_spec("matplotlib") is None:
        return
    figures = os.path.join(workdir, "figures")
    os.makedirs(figures, exist_ok=True)
    valid = data["valid"]
    image_grid(os.path.join(figures, "balls_domains.png"), valid["x"][0],
               np.asarray(valid["domain"][0]), per_label=per_domain,
               title="validation images per domain (member 0)")
    images, rows = [], []
    for index, (seed, data_seed) in enumerate(members):
        params, model_state = _member(state, index)
        x = valid["x"][index][:8]
        x_hat = np.clip(np.asarray(method.reconstruct(params, model_state, x)), -1.0, 1.0)
        images += [to_float_images(x), x_hat]
        rows += [f"m{index} input", f"m{index} recon."]
    labels = np.repeat(np.arange(len(rows)), 8)
    image_grid(os.path.join(figures, "reconstructions.png"), np.concatenate(images), labels,
               per_label=8, title="validation images and reconstructions",
               row_names=rows)
