"""A user's own MD-CRL data (`data.dataset=domains`): observations from several domains, from
`.npz` files (`npz_files.py`; formats in docs/own_data.md).

Per split, N rows: `x` [N, x_dim] (floats) and `domain` [N] (integers 0..D-1; every domain in
the training split, at least two), required; optional true latents `z` [N, z_dim] together
with `invariant` [k] (per dataset, in train.npz or the single file: the indices of z's
invariant columns), which switch on the R^2 metrics.

`make_domains_data` returns what `make_mixing_splits` returns: {train, valid, test: {"x"
[N, x_dim] f32, "domain" [N] int32, and "z" [N, z_dim] f32 with the invariant columns first,
in the order `invariant` lists them, then the others in file order}}.
"""

from typing import Dict, NamedTuple, Optional

import jax.numpy as jnp
import numpy as np

from wscrl_jax.data import npz_files
from wscrl_jax.data.npz_files import DataFileError

PER_ROW = ("x", "domain", "z")
MDCRL_SPLITS = {"train": "train", "val": "valid", "test": "test"}  # file split -> data split


class Domains(NamedTuple):
    """Checked arrays of a domains dataset: `tables` {file key: {name: array}} (train / val /
    test of a directory, or "all" of one file), `invariant` (indices into z's columns, or
    None without z), the number of domains D and x_dim."""

    source: npz_files.Source
    tables: Dict[str, Dict[str, np.ndarray]]
    invariant: Optional[np.ndarray]
    num_domains: int
    x_dim: int

    @property
    def z_dim(self) -> Optional[int]:
        """Columns of the true latents, or None without them."""
        table = next(iter(self.tables.values()))
        return table["z"].shape[1] if "z" in table else None


_CACHE: Dict[tuple, Domains] = {}


def load_domains(path: str, source: str = "npz") -> Domains:
    """The checked data of `data.path` (cached while the files are unchanged); one
    `DataFileError` line for any problem. source: `data.source`, "npz" (the files) or "tfds"
    (a dataset built from them by scripts/build_dataset.py, `own_tfds_read.py`)."""
    if source == "tfds":
        from wscrl_jax.data import own_tfds_read  # imports TFDS: only where it is used
        return own_tfds_read.read_domains(path)
    source = npz_files.locate(path)
    key = npz_files.file_stamp(list(source.files.values()))
    if key not in _CACHE:
        _CACHE.clear()  # one dataset at a time
        _CACHE[key] = _read(source)
    return _CACHE[key]


def _read(source: npz_files.Source) -> Domains:
    tables, invariant, inv_path, x_dim = {}, None, "", None
    for split, path in source.files.items():
        arrays = npz_files.read_arrays(path, ("x", "domain"), ("z", "invariant"))
        x = arrays["x"]
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0 or x.dtype.kind != "f":
            raise DataFileError(f"{path}: array 'x' has shape {list(x.shape)} and dtype "
                                f"{x.dtype}; float vectors [N, x_dim] expected (images: not "
                                "supported by data.dataset=domains)")
        if x_dim is not None and x.shape[1] != x_dim:
            raise DataFileError(f"{path}: array 'x' has {x.shape[1]} columns, "
                                f"{source.files['train']} {x_dim}; every split needs the same "
                                "x_dim")
        x_dim = x.shape[1]
        n = x.shape[0]
        dom = npz_files.one_per_row(path, "domain", arrays["domain"], n, "x",
                                    "one domain index per row")
        npz_files.require_integers(path, "domain", dom, 0, np.iinfo(np.int32).max,
                                   "domains are numbered 0..D-1")
        arrays["domain"] = dom.astype(np.int64)
        if "z" in arrays:
            z = arrays["z"]
            npz_files.require_rows(path, "z", z, n, "x")
            if z.ndim != 2 or z.shape[1] == 0:
                raise DataFileError(f"{path}: array 'z' has shape {list(z.shape)}; [N, z_dim] "
                                    "true latents expected")
        if "invariant" in arrays:
            inv = arrays.pop("invariant")
            npz_files.same_value(path, "invariant", inv, invariant, inv_path)
            invariant, inv_path = inv, path
        tables[split] = arrays
    _check_domains(source, tables)
    invariant = _check_truth(source, tables, invariant, inv_path)
    num_domains = int(tables["all" if "all" in tables else "train"]["domain"].max()) + 1
    return Domains(source, tables, invariant, num_domains, int(x_dim))


def _check_domains(source, tables):
    """The training rows (or the single file) hold every domain 0..D-1, D >= 2; the other
    splits no domain beyond D-1."""
    first = "all" if "all" in tables else "train"
    path = source.files[first]
    present = np.unique(tables[first]["domain"])
    count = int(present.max()) + 1
    if len(present) < 2:
        raise DataFileError(f"{path}: array 'domain' holds a single domain ({present[0]}); "
                            "MD-CRL needs at least two")
    if len(present) != count:
        lack = sorted(set(range(count)) - set(present.tolist()))
        raise DataFileError(f"{path}: array 'domain' is not numbered 0..D-1: domain(s) "
                            f"{lack[:5]} of 0..{count - 1} have no rows; renumber the domains")
    for split, arrays in tables.items():
        high = int(arrays["domain"].max())
        if high >= count:
            raise DataFileError(f"{source.files[split]}: array 'domain' holds domain {high}, "
                                f"which {path} lacks (domains 0..{count - 1})")


def _check_truth(source, tables, invariant, inv_path) -> Optional[np.ndarray]:
    """z in every split or none, with `invariant` [k]: distinct column indices of z."""
    has_z = {split: "z" in arrays for split, arrays in tables.items()}
    first = "all" if "all" in tables else "train"
    if len(set(has_z.values())) > 1:
        lacking = [source.files[s] for s, h in has_z.items() if not h]
        raise DataFileError(f"{lacking[0]}: no array 'z', unlike {source.files[first]}; give "
                            "every split its true latents or none")
    if not has_z[first]:
        if invariant is not None:
            raise DataFileError(f"{inv_path}: array 'invariant' needs the true latents 'z' "
                                "[N, z_dim] it indexes; add z or drop invariant")
        return None
    z_dims = {arrays["z"].shape[1] for arrays in tables.values()}
    if len(z_dims) > 1:
        raise DataFileError(f"{source.path}: array 'z' has different column counts per split "
                            f"({sorted(z_dims)}); every split needs the same z_dim")
    z_dim = z_dims.pop()
    if invariant is None:
        raise DataFileError(f"{source.files[first]}: array 'z' needs 'invariant' (the indices "
                            "of z's invariant columns, [k]) for the R^2 metrics; add it or "
                            "drop z")
    inv = invariant.reshape(-1)
    if inv.size == 0:
        raise DataFileError(f"{inv_path}: array 'invariant' is empty; list at least one "
                            "invariant column of z")
    npz_files.require_integers(inv_path, "invariant", inv, 0, z_dim - 1,
                               f"indices of z's columns (z_dim={z_dim})")
    if len(np.unique(inv)) != inv.size:
        raise DataFileError(f"{inv_path}: array 'invariant' lists a column twice")
    return inv.astype(np.int64)


def split_sizes(domains: Domains, val_fraction: float, test_fraction: float) -> Dict[str, int]:
    """Rows per split (train / val / test): the files', or those of one file split."""
    return npz_files.table_split_sizes(domains.tables, "x", val_fraction, test_fraction)


def split_tables(domains: Domains, split_seed: int, val_fraction: float,
                 test_fraction: float) -> Dict[str, Dict[str, np.ndarray]]:
    """{train, val, test: {name: [N, ...]}}: the files' splits, or one file's rows split by
    `npz_files.split_indices`."""
    return npz_files.split_tables(domains.tables, "x", PER_ROW, split_seed, val_fraction,
                                  test_fraction)


def make_domains_data(data_cfg, split_seed: int) -> Dict[str, Dict[str, jnp.ndarray]]:
    """{train, valid, test: {x, domain[, z]}} of `data.path`; one file is split by
    `split_seed` with `data.val_fraction` / `data.test_fraction`."""
    domains = load_domains(data_cfg.path, data_cfg.get("source", "npz"))
    tables = split_tables(domains, split_seed, data_cfg.val_fraction, data_cfg.test_fraction)
    out = {}
    for split, name in MDCRL_SPLITS.items():
        t = tables[split]
        arrays = {"x": jnp.asarray(t["x"], jnp.float32),
                  "domain": jnp.asarray(t["domain"], jnp.int32)}
        if "z" in t:
            inv = domains.invariant
            rest = np.setdiff1d(np.arange(t["z"].shape[1]), inv)  # ascending file order
            arrays["z"] = jnp.asarray(t["z"][:, np.concatenate([inv, rest])], jnp.float32)
        out[name] = arrays
    return out
