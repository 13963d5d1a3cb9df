"""Reading a dataset built by `own_tfds.build` (`data.source=tfds`, docs/own_data.md) back into
the in-memory route's checked tables: `read_pairs` -> `own_pairs.Pairs`, `read_domains` ->
`own_domains.Domains`, which `make_pairs_data` / `make_domains_data` then turn into the run's
splits exactly as for the `.npz` files.

Grain reads each split's ArrayRecord data source (`tfds.builder_from_directory`, no
TensorFlow) in chunks of CHUNK records, each chunk written into the split's arrays at the rows'
`index`: besides the arrays, reading holds at most one chunk read ahead and one being copied.
The arrays themselves are the run's data and stay in memory (training and evaluation read
them from there, as for the `.npz` files).
"""

import json
import os
from typing import Dict, Tuple

import numpy as np

from wscrl_jax.data import npz_files, own_tfds
from wscrl_jax.data.npz_files import DataFileError
from wscrl_jax.data.own_domains import Domains
from wscrl_jax.data.own_pairs import Pairs

CHUNK = 4096  # records per Grain batch while reading (and read ahead at most)
READ_THREADS = 4  # Grain threads reading records

_CACHE: Dict[tuple, tuple] = {}


def locate(path: str, fmt: str) -> str:
    """The built dataset's directory: `path` itself (OUT/own_data/<fmt>/1.0.0) or the --out
    directory it was built into."""
    if not path:
        raise DataFileError("data.path is not set; with data.source=tfds pass the --out "
                            "directory of scripts/build_dataset.py, --config.data.path=DIR")
    for candidate in (path, own_tfds.dataset_dir(path, fmt)):
        if os.path.isfile(os.path.join(candidate, own_tfds.META_FILE)):
            return candidate
    other = [f for f in own_tfds.FORMATS if f != fmt
             and os.path.isfile(os.path.join(own_tfds.dataset_dir(path, f), own_tfds.META_FILE))]
    hint = (f"it holds {other[0]} data (data.dataset={other[0]})" if other else
            f"build one with python scripts/build_dataset.py --format {fmt} --path NPZ "
            "--out DIR and pass DIR as data.path")
    raise DataFileError(f"{path}: no {fmt} dataset built by scripts/build_dataset.py "
                        f"(data.source=tfds); {hint}")


def read_tables(path: str, fmt: str) -> Tuple[str, dict, Dict[str, Dict[str, np.ndarray]]]:
    """(dataset directory, own_data.json, {split: {name: [N, ...]}}) of a built dataset, cached
    while its files are unchanged."""
    directory = locate(path, fmt)
    files = sorted(os.path.join(directory, f) for f in os.listdir(directory))
    key = (fmt, npz_files.file_stamp(files))
    if key not in _CACHE:
        _CACHE.clear()  # one dataset at a time
        _CACHE[key] = _read(directory, fmt)
    return _CACHE[key]


def _read(directory: str, fmt: str):
    try:
        with open(os.path.join(directory, own_tfds.META_FILE)) as f:
            meta = json.load(f)
        import tensorflow_datasets as tfds
        sources = tfds.builder_from_directory(directory).as_data_source()
    except (OSError, ValueError, KeyError) as e:
        raise DataFileError(f"{directory}: the built dataset cannot be read ({_short(e)}); "
                            "build it again with scripts/build_dataset.py") from None
    if meta.get("format") != fmt:
        raise DataFileError(f"{directory}: holds {meta.get('format')} data, not {fmt}")
    tables = {split: _read_split(directory, split, sources[split], info, meta["fields"])
              for split, info in meta["splits"].items()}
    return directory, meta, tables


def _read_split(directory: str, split: str, source, info: dict,
                fields: dict) -> Dict[str, np.ndarray]:
    """{name: [rows, ...]} of the arrays `info` lists, put in order by each record's index."""
    import grain
    rows = int(info["rows"])
    if len(source) != rows:
        raise DataFileError(f"{directory}: the {split} split holds {len(source)} records, "
                            f"{rows} expected; build the dataset again")
    out = {name: np.empty((rows,) + tuple(fields[name][0]), np.dtype(fields[name][1]))
           for name in info["arrays"]}
    seen = np.zeros(rows, bool)
    records = grain.MapDataset.source(source).to_iter_dataset(
        grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=CHUNK))
    for batch in records.batch(CHUNK):
        index = np.asarray(batch["index"])
        for name, array in out.items():
            array[index] = batch[name]
        seen[index] = True
    if not seen.all():
        raise DataFileError(f"{directory}: the {split} split lacks {int((~seen).sum())} of its "
                            f"{rows} rows; build the dataset again")
    return out


def _source(directory: str, meta: dict) -> npz_files.Source:
    """The dataset as a `Source` of fixed splits; `files` name the splits in messages."""
    return npz_files.Source(directory, {s: f"{directory} ({s} split)" for s in meta["splits"]})


def read_pairs(path: str, dim_z: int) -> Pairs:
    """The pairs of a dataset built with --format pairs and --dim_z equal to `dim_z`."""
    directory, meta, tables = read_tables(path, "pairs")
    if int(meta["dim_z"]) != int(dim_z):
        raise DataFileError(f"{directory}: built with --dim_z {meta['dim_z']}, but data.dim_z="
                            f"{dim_z}; set data.dim_z={meta['dim_z']} or build it again with "
                            f"--dim_z {dim_z}")
    graph = meta["true_graph"]
    dim_x = int(tables["train"]["x1"].shape[1])
    return Pairs(_source(directory, meta), tables,
                 None if graph is None else np.asarray(graph, np.int64), dim_x)


def read_domains(path: str) -> Domains:
    """The domains of a dataset built with --format domains."""
    directory, meta, tables = read_tables(path, "domains")
    inv = meta["invariant"]
    num_domains = int(tables["train"]["domain"].max()) + 1
    return Domains(_source(directory, meta), tables,
                   None if inv is None else np.asarray(inv, np.int64), num_domains,
                   int(tables["train"]["x"].shape[1]))


def _short(error: BaseException) -> str:
    return " ".join(str(error).split())[:160] or type(error).__name__
