"""A user's own data in `.npz` files: reading, checking and splitting, shared by the WS-CRL
pairs (`own_pairs.py`) and the MD-CRL domains (`own_domains.py`); docs/own_data.md.

`data.path` is either a directory holding `train.npz`, `val.npz` and `test.npz` (the splits
as given) or one `.npz` file, split at random into train / val / test rows by the split seed
with `data.val_fraction` and `data.test_fraction`. Every problem with a file is one
`DataFileError` line that names the file and the array (the config checks turn it into the
CLI's `error:` line before anything is written).
"""

import os
import zipfile
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

SPLIT_FILES = ("train", "val", "test")  # <split>.npz in a data directory


class DataFileError(ValueError):
    """A data file is missing, unreadable or holds arrays that do not fit; one line naming the
    file, the array and what to do."""


class Source(NamedTuple):
    """Where the data are: a directory of split files (`files` {split: path}) or one file
    (`files` {"all": path}) to split."""

    path: str
    files: Dict[str, str]

    @property
    def is_directory(self) -> bool:
        return "all" not in self.files


def locate(path: str, optional: Sequence[str] = ()) -> Source:
    """The files of `data.path`: a directory needs train.npz, val.npz and test.npz (and may
    hold the split files named in `optional`, e.g. dci_train); a file is read whole."""
    if not path:
        raise DataFileError("data.path is not set; pass a directory with train.npz, val.npz "
                            "and test.npz, or one .npz file, --config.data.path=PATH")
    if os.path.isdir(path):
        missing = [f"{s}.npz" for s in SPLIT_FILES
                   if not os.path.isfile(os.path.join(path, f"{s}.npz"))]
        if missing:
            raise DataFileError(f"{path}: the data directory lacks {', '.join(missing)}; it "
                                "needs train.npz, val.npz and test.npz (or pass one .npz file "
                                "as data.path to split it)")
        files = {s: os.path.join(path, f"{s}.npz") for s in SPLIT_FILES}
        files.update({s: os.path.join(path, f"{s}.npz") for s in optional
                      if os.path.isfile(os.path.join(path, f"{s}.npz"))})
        return Source(path, files)
    if not os.path.exists(path):
        raise DataFileError(f"{path}: no such file or directory (data.path)")
    return Source(path, {"all": path})


def array_names(path: str) -> List[str]:
    """The array names in an .npz file without reading the arrays."""
    try:
        with zipfile.ZipFile(path) as z:
            return [n[:-len(".npy")] for n in z.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataFileError(f"{path}: not a readable .npz file ({_short(e)}); write it with "
                            "numpy.savez") from None


def read_arrays(path: str, required: Sequence[str],
                optional: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """{name: array} of the `required` arrays (each must be there) and of those of `optional`
    that are; numeric arrays only (no object or string dtype), every float finite."""
    names = array_names(path)
    missing = [n for n in required if n not in names]
    if missing:
        raise DataFileError(f"{path}: no array {', '.join(repr(n) for n in missing)} (it holds "
                            f"{', '.join(repr(n) for n in names) or 'none'})")
    out = {}
    with np.load(path, allow_pickle=False) as npz:
        for name in list(required) + [n for n in optional if n in names]:
            try:
                a = npz[name]
            except ValueError as e:  # object arrays need pickle
                raise DataFileError(f"{path}: array {name!r} is not numeric ({_short(e)}); "
                                    "store numbers (float or int)") from None
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise DataFileError(f"{path}: array {name!r} cannot be read, the file is "
                                    f"damaged ({_short(e)}); write it again") from None
            check_numeric(path, name, a)
            out[name] = a
    return out


def check_numeric(path: str, name: str, a: np.ndarray):
    """Numbers only (bool, int, unsigned or float), every float finite."""
    if a.dtype.kind not in "biuf":
        raise DataFileError(f"{path}: array {name!r} has dtype {a.dtype} ({_kind(a.dtype)}); "
                            "store numbers (float or int)")
    if a.dtype.kind == "f":
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            nan = int(np.count_nonzero(np.isnan(a)))
            raise DataFileError(f"{path}: array {name!r} holds {bad} non-finite value(s) "
                                f"({nan} NaN, {bad - nan} inf); remove or impute those rows")


def require_integers(path: str, name: str, a: np.ndarray, low: int, high: int, what: str):
    """Integer values (any int dtype, or floats that are whole numbers) in [low, high]."""
    whole = a.dtype.kind in "iub" or (a.size == 0 or np.all(np.equal(np.mod(a, 1), 0)))
    if not whole:
        raise DataFileError(f"{path}: array {name!r} holds non-integer values; {what}")
    if a.size and (a.min() < low or a.max() > high):
        raise DataFileError(f"{path}: array {name!r} holds values in [{a.min():g}, "
                            f"{a.max():g}], outside {low}..{high}; {what}")


def require_rows(path: str, name: str, a: np.ndarray, rows: int, like: str):
    """a has `rows` rows (those of the array `like`)."""
    if a.ndim == 0 or a.shape[0] != rows:
        raise DataFileError(f"{path}: array {name!r} has shape {list(a.shape)}: {rows} rows "
                            f"expected, one per row of {like!r}")


def one_per_row(path: str, name: str, a: np.ndarray, rows: int, like: str,
                what: str) -> np.ndarray:
    """`a` as [rows] (a column [rows, 1] is flattened): one entry per row of `like`; `what`
    says what an entry is, for the error line."""
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    require_rows(path, name, a, rows, like)
    if a.ndim != 1:
        raise DataFileError(f"{path}: array {name!r} has shape {list(a.shape)}; {what}, [N]")
    return a


def split_indices(n: int, seed: int, val_fraction: float,
                  test_fraction: float) -> Dict[str, np.ndarray]:
    """Row indices {train, val, test} of one file of n rows: a random permutation from
    `numpy.random.default_rng(seed)`, the first `round(n * test_fraction)` rows for test, the
    next `round(n * val_fraction)` for val, the rest for training (each in permutation
    order)."""
    perm = np.random.default_rng(int(seed)).permutation(n)
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    return {"test": perm[:n_test], "val": perm[n_test:n_test + n_val],
            "train": perm[n_test + n_val:]}


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> Dict[str, int]:
    """Rows per split of `split_indices` (without drawing the permutation)."""
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    return {"train": n - n_test - n_val, "val": n_val, "test": n_test}


def take_rows(arrays: Dict[str, np.ndarray], rows: np.ndarray,
              per_row: Sequence[str]) -> Dict[str, np.ndarray]:
    """The arrays of `per_row` (one entry per data row) restricted to `rows`; others as
    they are."""
    return {k: (v[rows] if k in per_row else v) for k, v in arrays.items()}


def table_split_sizes(tables: Dict[str, Dict[str, np.ndarray]], row_key: str,
                      val_fraction: float, test_fraction: float) -> Dict[str, int]:
    """Rows per split of loaded tables: the split files' own rows, or (one file, under "all")
    those `split_indices` gives; `row_key` names an array with one entry per row."""
    if "all" in tables:
        return split_sizes(tables["all"][row_key].shape[0], val_fraction, test_fraction)
    return {s: t[row_key].shape[0] for s, t in tables.items()}


def split_tables(tables: Dict[str, Dict[str, np.ndarray]], row_key: str, per_row: Sequence[str],
                 split_seed: int, val_fraction: float,
                 test_fraction: float) -> Dict[str, Dict[str, np.ndarray]]:
    """{split: {name: [N, ...]}}: the split files' tables as they are, or one file's ("all")
    rows split by `split_indices` into train, val, test."""
    if "all" not in tables:
        return dict(tables)
    rows = split_indices(tables["all"][row_key].shape[0], split_seed, float(val_fraction),
                         float(test_fraction))
    return {s: take_rows(tables["all"], r, per_row) for s, r in rows.items()}


def file_stamp(paths: Sequence[str]) -> Tuple:
    """(path, size, mtime) of every file: a key under which their contents can be cached."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((os.path.realpath(p), st.st_size, st.st_mtime_ns))
    return tuple(out)


def _short(error: BaseException) -> str:
    return " ".join(str(error).split())[:160] or type(error).__name__


def _kind(dtype) -> str:
    return {"O": "objects", "U": "strings", "S": "bytes", "c": "complex numbers",
            "M": "dates", "m": "time spans", "V": "records"}.get(dtype.kind, dtype.kind)


def same_value(path: str, name: str, value: np.ndarray, first: Optional[np.ndarray],
               first_path: str):
    """A per-dataset array (e.g. true_graph, invariant) repeated in several split files must
    be the same in each."""
    if first is not None and (first.shape != value.shape or not np.array_equal(first, value)):
        raise DataFileError(f"{path}: array {name!r} differs from the one in {first_path}; "
                            "store it once (in train.npz) or identically")
