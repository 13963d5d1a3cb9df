"""Stage-1 codes on disk: what MD-CRL's first stage writes and its second stage reads.

Reference: `MixingAutoencoderPL.on_train_epoch_end` / `on_validation_epoch_end` (stage 1 writes,
`model.save_encoded_data`) and `datamodule/encoded_datamodule.py: EncodedDataModule`,
`datamodule/md_mixing_encoded_dataset.py` (stage 2 reads). The reference saves torch tensors and
stage 2 parses the stage-1 run's `config_tree.txt` for its sizes; here a run writes
`WORKDIR/encoded/member<i>.npz` per member and explicit metadata in `WORKDIR/encoded/meta.json`
(md-crl gotcha 14). Each file is written to a temporary name and renamed, so a reader never
sees half a file.

Files:

* `member<i>.npz`: for every split `s` of member `i`, `z_hat_<s>` [N_s, latent] (codes),
  `z_<s>` [N_s, z_dim] (true latents) and `domain_<s>` [N_s] (domain index).
* `meta.json`: `latent_dim`, `num_domains`, `z_dim`, `z_dim_invariant`, `x_dim`, `members`
  ([[model seed, data seed], ...]), `splits` ({split: N_s}), `train_codes` ("online" or
  "final") and `source` ("mixing" or "balls"; absent in older files: mixing).
"""

import json
import os
import zipfile

import jax.numpy as jnp
import numpy as np

ENCODED_DIR = "encoded"
ENCODED_META = "meta.json"


class Stage1OutputMissing(FileNotFoundError):
    """Stage 2 points at a workdir without stage-1 encoded data."""


def encoded_dir(workdir: str) -> str:
    """`WORKDIR/encoded`."""
    return os.path.join(workdir, ENCODED_DIR)


def encoded_meta_path(workdir: str) -> str:
    """`WORKDIR/encoded/meta.json`."""
    return os.path.join(workdir, ENCODED_DIR, ENCODED_META)


def encoded_member_path(workdir: str, member_index: int) -> str:
    """`WORKDIR/encoded/member<i>.npz`."""
    return os.path.join(workdir, ENCODED_DIR, f"member{member_index}.npz")


# ------------------------------------------------------------------------------------------------
# Writing (stage 1)


def write_encoded(workdir: str, member_index: int, arrays) -> str:
    """Writes one member's arrays, {split: {"z_hat" [N, latent], "z" [N, z_dim], "domain" [N]}}
    (numpy), atomically to `member<i>.npz` as `z_hat_<split>`, ...; returns its path."""
    os.makedirs(encoded_dir(workdir), exist_ok=True)
    path = encoded_member_path(workdir, member_index)
    tmp = os.path.join(encoded_dir(workdir), f"member{member_index}.tmp.npz")
    np.savez(tmp, **{f"{name}_{split}": a for split, named in arrays.items()
                     for name, a in named.items()})
    os.replace(tmp, path)
    return path


def write_encoded_meta(workdir: str, meta: dict) -> str:
    """Writes the metadata dict atomically to `meta.json` (after every member's file, so its
    presence means the stage-1 output is complete); returns its path."""
    os.makedirs(encoded_dir(workdir), exist_ok=True)
    path = encoded_meta_path(workdir)
    with open(path + ".tmp", "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(path + ".tmp", path)
    return path


# ------------------------------------------------------------------------------------------------
# Reading (stage 2)


def read_encoded_meta(workdir: str) -> dict:
    """The metadata of a stage-1 workdir; raises `Stage1OutputMissing` with what to run."""
    path = encoded_meta_path(workdir)
    if not workdir or not os.path.isfile(path):
        raise Stage1OutputMissing(
            f"data.stage1_workdir={workdir!r} holds no stage-1 output ({path} is missing); run "
            "stage 1 first, e.g. configs/md_mixing.py:poly_stage1 --workdir W1, then pass "
            "--config.data.stage1_workdir=W1")
    with open(path) as f:
        return json.load(f)


CODE_RANGES = ("symmetric", "unit")


def read_member_arrays(workdir: str, member_index: int, fields):
    """(meta, {name: array}) of `member<i>.npz`, checked to hold `<field>_<split>` for every
    field and split of the meta; `Stage1OutputMissing` (one line) otherwise."""
    meta = read_encoded_meta(workdir)
    path = encoded_member_path(workdir, member_index)
    if not os.path.isfile(path):
        raise Stage1OutputMissing(f"{path} is missing (stage 1 has {len(meta['members'])} "
                                  "member(s); check data.stage1_member)")
    try:
        with np.load(path) as f:
            arrays = dict(f)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise Stage1OutputMissing(f"{path} cannot be read ({e}); rerun stage 1") from None
    missing = [f"{kind}_{split}" for split in meta["splits"] for kind in fields
               if f"{kind}_{split}" not in arrays]
    if missing:
        raise Stage1OutputMissing(f"{path} lacks {', '.join(missing[:4])}; rerun stage 1")
    return meta, arrays


def load_encoded_splits(workdir: str, member_index: int, per_split: bool = True,
                        code_range: str = "symmetric"):
    """Stage-2 inputs from a stage-1 workdir: {split: {"x": [N, latent] scaled codes (f32),
    "z": [N, z_dim] (f32), "domain": [N] (int32)}}.

    `code_range="symmetric"` (mixing): `x = 2 (z_hat - min) / (max - min) - 1`; `"unit"`
    (balls, `md_balls_encoded_dataset.py` with `normalize: True`): `x = (z_hat - min) / (max -
    min)`; with the global extrema of each split's own codes for train and valid (reference,
    md-crl gotcha 13); `per_split=False` uses the training split's extrema for every split. The
    reference's stage-2 test split is its validation split (md-crl gotcha 6); here `test` is the
    stage-1 test split (same mixing map when `data.test_shares_distribution`), for the
    held-out R^2 only, and always scaled with the training extrema: with its own extrema the
    fitted train -> test regressions would see differently scaled inputs (held-out R^2 0.41
    instead of 0.80 on the poly pipeline).
    """
    meta, arrays = read_member_arrays(workdir, member_index, ("z_hat", "z", "domain"))
    lo_tr, hi_tr = arrays["z_hat_train"].min(), arrays["z_hat_train"].max()
    out = {}
    for split in meta["splits"]:
        zh = arrays[f"z_hat_{split}"].astype(np.float32)
        lo, hi = (zh.min(), zh.max()) if per_split and split != "test" else (lo_tr, hi_tr)
        unit = (zh - lo) / (hi - lo)
        scaled = unit if code_range == "unit" else 2.0 * unit - 1.0
        out[split] = {"x": jnp.asarray(scaled, jnp.float32),
                      "z": jnp.asarray(arrays[f"z_{split}"], jnp.float32),
                      "domain": jnp.asarray(arrays[f"domain_{split}"], jnp.int32)}
    return out
