"""A user's own data (docs/own_data.md) built once into a TFDS ArrayRecord dataset, for
`data.source=tfds` (`scripts/build_dataset.py`; read back by `own_tfds_read.py`).

`build` checks the `.npz` files with the in-memory route's own loaders
(`own_pairs.load_pairs`, `own_domains.load_domains`), splits one file exactly as that route
does (`split_tables`: the split seed, `val_fraction`, `test_fraction`), and only then writes
OUT/own_data/<pairs|domains>/1.0.0/: ArrayRecord files per split (train, val, test, and
dci_train where the pairs directory has it), TFDS's dataset_info.json and features.json, and
`own_data.json`. A failure while writing removes what was written. TensorFlow is never
imported.

One record per row of a split (TFDS shuffles records while writing; `index` restores the
order):

    pairs    x1, x2  float32 [dim_x]; z1, z2, e1, e2  float32 [dim_z]; intervention_labels
             int64 []; true_log_prob float32 []                      (each where the data have it)
    domains  x  float32 [x_dim]; domain  int64 []; z  float32 [z_dim]   (z where the data have it)
    both     index  int64 []  the row's position in its split

An array that only some splits hold (pairs' `true_log_prob`) is stored as NaN in the others,
which `own_data.json` does not list for them. `own_data.json` holds the per-dataset values:
{"format", "splits": {split: {"rows", "arrays": [names]}}, "fields": {name: [shape, dtype]},
"dim_z" (pairs), "true_graph" [dim_z, dim_z] or null (pairs), "invariant" [k] or null
(domains), "built_from": {path, split_seed, val_fraction, test_fraction}}.
"""

import glob
import json
import os
import shutil
from typing import Dict, Optional, Tuple

import numpy as np

from wscrl_jax.data import own_domains, own_pairs
from wscrl_jax.data.npz_files import DataFileError

NAME = "own_data"  # the TFDS dataset name: OUT/own_data/<format>/<DATASET_VERSION>
DATASET_VERSION = "1.0.0"
FORMATS = ("pairs", "domains")
META_FILE = "own_data.json"
INT_ARRAYS = ("intervention_labels", "domain")  # stored as int64; every other array float32


def dataset_dir(out: str, fmt: str) -> str:
    """OUT/own_data/<fmt>/1.0.0: where `build` writes a format's dataset."""
    return os.path.join(out, NAME, fmt, DATASET_VERSION)


def checked_tables(fmt: str, path: str, dim_z: Optional[int], split_seed: int,
                   val_fraction: float, test_fraction: float
                   ) -> Tuple[Dict[str, Dict[str, np.ndarray]], dict]:
    """({split: {name: [N, ...]}}, per-dataset values) of `path` after the in-memory route's
    checks; one `DataFileError` line for any problem, including a split without rows."""
    if fmt == "pairs":
        pairs = own_pairs.load_pairs(path, int(dim_z))
        tables = own_pairs.split_tables(pairs, split_seed, val_fraction, test_fraction)
        graph = None if pairs.true_graph is None else np.asarray(pairs.true_graph).tolist()
        extra = {"dim_z": int(dim_z), "true_graph": graph}
        files, first = pairs.source.files, "x1"
    elif fmt == "domains":
        domains = own_domains.load_domains(path)
        tables = own_domains.split_tables(domains, split_seed, val_fraction, test_fraction)
        inv = domains.invariant
        extra = {"invariant": None if inv is None else np.asarray(inv).tolist()}
        files, first = domains.source.files, "x"
    else:
        raise DataFileError(f"--format {fmt!r} is not one of {FORMATS}")
    for split, arrays in tables.items():
        if arrays[first].shape[0] == 0:
            raise DataFileError(f"{files.get(split, path)}: array {first!r} gives no {split} "
                                f"rows; add rows or raise --{split}_fraction")
    extra["built_from"] = {"path": os.path.abspath(path), "split_seed": int(split_seed),
                           "val_fraction": float(val_fraction),
                           "test_fraction": float(test_fraction)}
    return tables, extra


def record_fields(tables: Dict[str, Dict[str, np.ndarray]]) -> Dict[str, Tuple[tuple, str]]:
    """{name: (shape of one row, dtype name)} of every array any split holds, plus `index`."""
    fields = {}
    for arrays in tables.values():
        for name, a in arrays.items():
            dtype = "int64" if name in INT_ARRAYS else "float32"
            fields.setdefault(name, (tuple(int(n) for n in a.shape[1:]), dtype))
    fields["index"] = ((), "int64")
    return fields


def _builder(fmt: str, tables, fields, data_dir: str):
    """A TFDS builder of `tables` (one record per row) into data_dir/own_data/<fmt>/."""
    import tensorflow_datasets as tfds  # imported once the files are checked

    class OwnData(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """A user's own pairs or domains, checked and split (`own_tfds.py`)."""
        name = NAME
        VERSION = tfds.core.Version(DATASET_VERSION)
        RELEASE_NOTES = {DATASET_VERSION: "Own data from .npz files, one record per row."}
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=f) for f in FORMATS]

        def _info(self):
            return self.dataset_info_from_configs(
                description=f"Own {fmt} data (docs/own_data.md).",
                features=tfds.features.FeaturesDict({
                    name: tfds.features.Tensor(shape=shape, dtype=np.dtype(dtype))
                    for name, (shape, dtype) in fields.items()}))

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._generate_examples(split) for split in tables}

        def _generate_examples(self, split):
            arrays = tables[split]
            n = next(iter(arrays.values())).shape[0]
            columns = {name: (np.asarray(arrays[name], np.dtype(dtype)) if name in arrays
                              else np.full((n,) + shape, np.nan, np.dtype(dtype)))
                       for name, (shape, dtype) in fields.items() if name != "index"}
            for i in range(n):
                yield i, dict({k: v[i] for k, v in columns.items()}, index=i)

    return OwnData(config=fmt, data_dir=data_dir, file_format="array_record")


def build(fmt: str, path: str, out: str, dim_z: Optional[int] = None, split_seed: int = 0,
          val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """Checks `path` (an .npz directory or file, as `data.path`) and writes it as
    OUT/own_data/<fmt>/1.0.0; returns that directory. Refuses (`DataFileError`) a format
    already built under OUT. dim_z: the pairs' number of causal variables (data.dim_z)."""
    if fmt == "pairs" and dim_z is None:
        raise DataFileError("--format pairs needs --dim_z D, the data.dim_z of the runs that "
                            "train on it (the z1, z2 columns and the label range are checked "
                            "against it)")
    tables, extra = checked_tables(fmt, path, dim_z, split_seed, val_fraction, test_fraction)
    root, config_dir, version_dir = (os.path.join(out, NAME), os.path.join(out, NAME, fmt),
                                     dataset_dir(out, fmt))
    if os.path.exists(config_dir):
        raise DataFileError(f"{config_dir} exists: {fmt} data are already built under {out}; "
                            "choose another --out (nothing is overwritten)")
    fields = record_fields(tables)
    meta = dict(format=fmt, fields={k: [list(s), d] for k, (s, d) in fields.items()},
                splits={s: {"rows": int(next(iter(a.values())).shape[0]), "arrays": sorted(a)}
                        for s, a in tables.items()}, **extra)
    existed = {p: os.path.exists(p) for p in (version_dir, config_dir, root,
                                              os.path.join(out, "downloads"), out)}
    try:
        builder = _builder(fmt, tables, fields, out)
        builder.download_and_prepare()
        tmp = os.path.join(version_dir, META_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=1)
        os.replace(tmp, os.path.join(version_dir, META_FILE))
    except BaseException:
        _remove_new(existed, config_dir)
        raise
    downloads = os.path.join(out, "downloads")  # TFDS's, left empty: nothing is downloaded
    if not existed[downloads] and not any(files for _, _, files in os.walk(downloads)):
        shutil.rmtree(downloads, ignore_errors=True)
    return version_dir


def _remove_new(existed: Dict[str, bool], config_dir: str):
    """Removes what a failed build left: TFDS's `incomplete.*` directories and every path of
    `existed` (deepest first) that did not exist before."""
    for leftover in glob.glob(os.path.join(config_dir, "incomplete.*")):
        shutil.rmtree(leftover, ignore_errors=True)
    for path, was_there in existed.items():
        if not was_there and os.path.exists(path):
            shutil.rmtree(path, ignore_errors=True)
