"""Built-in datasets written in the own-data formats (docs/own_data.md): a worked example for
users and a ground truth for the tests (`scripts/export_dataset.py`).

* WS-CRL scaling data (`config.method` lcm, `data.dataset=scaling`): train.npz, dci_train.npz,
  val.npz, test.npz with x1, x2, z1, z2, intervention_labels (and true_log_prob where the data
  carry it), true_graph in train.npz; read back with `data.dataset=pairs`.
* MD-CRL mixing data (`config.method` mdcrl, `data.dataset=mixing`): train.npz, val.npz,
  test.npz with x, domain, z, and invariant (z's first z_dim_invariant columns) in train.npz;
  read back with `data.dataset=domains`.

Every array is written as the run would hold it (float32, int32), so that training on the
files gives the numbers of training on the generated data.
"""

import os
from typing import Dict, List

import numpy as np

from wscrl_jax.data.mixing import make_mixing_splits, mixing_data_config
from wscrl_jax.data.npz_files import DataFileError
from wscrl_jax.data.own_domains import MDCRL_SPLITS
from wscrl_jax.data.scaling import make_scaling_data

PAIR_ARRAYS = ("x1", "x2", "z1", "z2", "intervention_labels", "true_log_prob")
EXPORTABLE = {"lcm": "scaling", "mdcrl": "mixing"}  # config.method -> its built-in dataset


def export_arrays(config, data_seed: int) -> Dict[str, Dict[str, np.ndarray]]:
    """{file stem: {name: array}} of the built-in dataset of `config` and `data_seed`; a
    `DataFileError` line for a config whose dataset cannot be exported."""
    method, dataset = config.get("method"), config.get("data", {}).get("dataset")
    if EXPORTABLE.get(method) != dataset:
        allowed = ", ".join(f"method {m} with data.dataset={d}" for m, d in EXPORTABLE.items())
        raise DataFileError(f"cannot export method={method}, data.dataset={dataset}: the "
                            f"exportable datasets are {allowed}")
    if method == "lcm":
        data = make_scaling_data(config.data, int(data_seed))
        out = {}
        for split in ("train", "dci_train", "val", "test"):
            out[split] = {k: np.asarray(v) for k, v in data[split].items() if k in PAIR_ARRAYS}
        out["train"]["true_graph"] = np.asarray(data["truth"]["adjacency"])
        return out
    cfg = mixing_data_config(config.data)
    data = make_mixing_splits(int(data_seed), cfg)
    out = {stem: {k: np.asarray(v) for k, v in data[split].items()}
           for stem, split in MDCRL_SPLITS.items() if split in data}
    out["train"]["invariant"] = np.arange(cfg.z_dim_invariant, dtype=np.int32)
    return out


def write_arrays(out_dir: str, arrays: Dict[str, Dict[str, np.ndarray]]) -> List[str]:
    """Writes OUT_DIR/<stem>.npz for every stem (each atomically); refuses (`DataFileError`)
    to overwrite an existing file. Returns the paths."""
    paths = [os.path.join(out_dir, f"{stem}.npz") for stem in arrays]
    taken = [p for p in paths if os.path.exists(p)]
    if taken:
        raise DataFileError(f"{taken[0]} exists; choose an empty --out directory (nothing "
                            "is overwritten)")
    os.makedirs(out_dir, exist_ok=True)
    for path, (stem, named) in zip(paths, arrays.items()):
        tmp = path + ".tmp.npz"
        np.savez(tmp, **named)
        os.replace(tmp, path)
    return paths
