"""A user's own WS-CRL pairs (`data.dataset=pairs`): observations before and after an unknown
intervention, from `.npz` files (`npz_files.py`; formats in docs/own_data.md).

Per split, N pairs: `x1`, `x2` [N, dim_x] (floats, required); optional `intervention_labels`
[N] (0 = none, k = variable k-1; the intervention metrics), `z1`, `z2` [N, dim_z] (true causal
variables; DCI and the graph matching), `e1`, `e2` [N, dim_z] (true noise; the noise DCI),
`true_log_prob` [N] (the ground truth's log-likelihood of each pair; `flow_nll`). Per dataset
(in train.npz or the single file): optional `true_graph` [dim_z, dim_z] (0/1, A[i, j] = 1 for
i -> j; the structural Hamming distances). A directory may add `dci_train.npz`, the split the
DCI regressors are fit on (the scaling data's independent second training draw); without it
they are fit on the training split, as the reference does for CausalCircuit (ws-crl gotcha 28).

`make_pairs_data` returns what `make_scaling_data` returns: {train, dci_train, val, test:
{name: [N, ...]}} (labels also as `true_interventions` masks [N, dim_z]) and {"truth":
{"adjacency": [d, d]}} where the true graph and z1 are known.
"""

from typing import Dict, NamedTuple, Optional

import jax.numpy as jnp
import numpy as np

from wscrl_jax.causal.interventions import intervention_masks
from wscrl_jax.data import npz_files
from wscrl_jax.data.npz_files import DataFileError

PER_ROW = ("x1", "x2", "z1", "z2", "e1", "e2", "intervention_labels", "true_log_prob")
OPTIONAL = PER_ROW[2:] + ("true_graph",)
LCM_SPLITS = ("train", "dci_train", "val", "test")


class Pairs(NamedTuple):
    """Checked arrays of a pairs dataset: `tables` {file key: {name: array}} (file keys
    train / val / test / dci_train of a directory, or "all" of one file), the true graph (or
    None), dim_x and where they came from."""

    source: npz_files.Source
    tables: Dict[str, Dict[str, np.ndarray]]
    true_graph: Optional[np.ndarray]
    dim_x: int

    @property
    def arrays(self) -> frozenset:
        """Names of the per-row arrays every split has (those of the training file)."""
        return frozenset(self.tables["all" if "all" in self.tables else "train"])


_CACHE: Dict[tuple, Pairs] = {}


def load_pairs(path: str, dim_z: int, source: str = "npz") -> Pairs:
    """The checked pairs of `data.path` (cached while the files are unchanged); one
    `DataFileError` line for any problem. source: `data.source`, "npz" (the files) or "tfds"
    (a dataset built from them by scripts/build_dataset.py, `own_tfds_read.py`)."""
    if source == "tfds":
        from wscrl_jax.data import own_tfds_read  # imports TFDS: only where it is used
        return own_tfds_read.read_pairs(path, dim_z)
    source = npz_files.locate(path, optional=("dci_train",))
    key = (npz_files.file_stamp(list(source.files.values())), dim_z)
    if key not in _CACHE:
        _CACHE.clear()  # one dataset at a time
        _CACHE[key] = _read(source, dim_z)
    return _CACHE[key]


def _read(source: npz_files.Source, dim_z: int) -> Pairs:
    tables, graph, graph_path, first = {}, None, "", None
    for split, path in source.files.items():
        arrays = npz_files.read_arrays(path, ("x1", "x2"), OPTIONAL)
        _check_observations(path, arrays, first)
        if first is None:
            first = (path, arrays["x1"].shape[1:])
        n = arrays["x1"].shape[0]
        for name in ("z1", "z2", "e1", "e2"):
            if name in arrays:
                _check_latents(path, name, arrays[name], n, dim_z)
        if "intervention_labels" in arrays:
            labels = npz_files.one_per_row(path, "intervention_labels",
                                           arrays["intervention_labels"], n, "x1",
                                           "one label per pair")
            npz_files.require_integers(path, "intervention_labels", labels, 0, dim_z,
                                       f"labels are 0 (no intervention) or k (variable k-1) "
                                       f"for data.dim_z={dim_z}")
            arrays["intervention_labels"] = labels
        if "true_log_prob" in arrays:
            npz_files.require_rows(path, "true_log_prob", arrays["true_log_prob"], n, "x1")
        if "true_graph" in arrays:
            g = arrays.pop("true_graph")
            if g.shape != (dim_z, dim_z):
                raise DataFileError(f"{path}: array 'true_graph' has shape {list(g.shape)}; "
                                    f"[{dim_z}, {dim_z}] expected (data.dim_z={dim_z})")
            npz_files.require_integers(path, "true_graph", g, 0, 1,
                                       "the true graph is a 0/1 adjacency matrix")
            npz_files.same_value(path, "true_graph", g, graph, graph_path)
            graph, graph_path = g, path
        tables[split] = arrays
    if len(first[1]) >= 2:
        raise DataFileError(f"{first[0]}: array 'x1' holds images {list(first[1])}; data."
                            "dataset=pairs trains on vectors [N, dim_x]: reduce images first "
                            "with an image VAE (the two-stage route, docs/own_data.md)")
    _check_same_arrays(source, tables)
    return Pairs(source, tables, graph, int(first[1][0]))


def _check_observations(path: str, arrays, first):
    """x1 and x2: the same shape, of the same size per row as in the first file; vectors
    [N, dim_x] of floats (images are refused by `_read`)."""
    x1, x2 = arrays["x1"], arrays["x2"]
    if x1.shape != x2.shape:
        raise DataFileError(f"{path}: array 'x2' has shape {list(x2.shape)}, array 'x1' "
                            f"{list(x1.shape)}; the pairs need the same shape")
    if first is not None and x1.shape[1:] != first[1]:
        what = "images" if x1.ndim >= 3 else "observations"
        raise DataFileError(f"{path}: array 'x1' holds {what} of shape {list(x1.shape[1:])}, "
                            f"{first[0]} of {list(first[1])}; every split needs the same size")
    if x1.ndim >= 3:  # refused once every split's size is compared (`_read`)
        return
    if x1.ndim != 2 or x1.shape[0] == 0 or x1.shape[1] == 0:
        raise DataFileError(f"{path}: array 'x1' has shape {list(x1.shape)}; [N, dim_x] "
                            "vectors with N, dim_x >= 1 expected")
    if x1.dtype.kind not in "f":
        raise DataFileError(f"{path}: array 'x1' has dtype {x1.dtype}; store the "
                            "observations as floats")


def _check_latents(path: str, name: str, a: np.ndarray, n: int, dim_z: int):
    npz_files.require_rows(path, name, a, n, "x1")
    if a.ndim != 2 or a.shape[1] != dim_z:
        raise DataFileError(f"{path}: array {name!r} has shape {list(a.shape)}; [{n}, {dim_z}] "
                            f"expected, one column per causal variable (data.dim_z={dim_z})")


def _check_same_arrays(source, tables):
    """Every split holds the same per-row arrays (the training file's; `true_log_prob` may be
    in any of them)."""
    if "all" in tables:
        return
    want = set(tables["train"]) - {"true_log_prob"}
    for split, arrays in tables.items():
        have = set(arrays) - {"true_log_prob"}
        if have != want:
            extra, lack = sorted(have - want), sorted(want - have)
            part = (f"lacks {', '.join(map(repr, lack))}" if lack
                    else f"has {', '.join(map(repr, extra))}")
            raise DataFileError(f"{source.files[split]}: {part}, unlike "
                                f"{source.files['train']}; give every split the same arrays")


def split_sizes(pairs: Pairs, val_fraction: float, test_fraction: float) -> Dict[str, int]:
    """Rows per split (train / val / test): the files', or those of one file split."""
    return npz_files.table_split_sizes(pairs.tables, "x1", val_fraction, test_fraction)


def split_tables(pairs: Pairs, split_seed: int, val_fraction: float,
                 test_fraction: float) -> Dict[str, Dict[str, np.ndarray]]:
    """{train, val, test[, dci_train]: {name: [N, ...]}}: the files' splits, or one file's rows
    split by `npz_files.split_indices` (train, val, test)."""
    return npz_files.split_tables(pairs.tables, "x1", PER_ROW, split_seed, val_fraction,
                                  test_fraction)


def make_pairs_data(data_cfg, split_seed: int) -> Dict[str, Dict[str, jnp.ndarray]]:
    """{train, dci_train, val, test: {name: [N, ...]}} (+ "truth") of `data.path`; one file is
    split by `split_seed` with `data.val_fraction` / `data.test_fraction`."""
    dim_z = int(data_cfg.dim_z)
    pairs = load_pairs(data_cfg.path, dim_z, data_cfg.get("source", "npz"))
    tables = split_tables(pairs, split_seed, data_cfg.val_fraction, data_cfg.test_fraction)
    tables.setdefault("dci_train", tables["train"])
    masks = intervention_masks(dim_z)
    out = {}
    for split in LCM_SPLITS:
        arrays = {}
        for name, a in tables[split].items():
            if name == "intervention_labels":
                labels = a.astype(np.int32)
                arrays[name] = jnp.asarray(labels)
                arrays["true_interventions"] = jnp.asarray(masks[labels].astype(np.int32))
            else:
                arrays[name] = jnp.asarray(a, jnp.float32)
        out[split] = arrays
    if pairs.true_graph is not None and "z1" in pairs.arrays:
        out["truth"] = {"adjacency": jnp.asarray(pairs.true_graph, jnp.int32)}
    return out
