"""Reading and validating a CausalCircuit download (the files of the dataset page).

A download directory holds `train.npz` or the ten shards `train-0.npz` .. `train-9.npz` (what
the reference's `causalcircuit_reduce_dim.py` reads; concatenated in shard order), plus
`val.npz` and `test.npz`. Each is an `.npz` archive read with `np.load` without pickle:

    imgs                (N, 2)     |S<L>    JPEG bytes of RGB images (512x512), before / after
    original_latents    (N, 2, 4)  float    causal variables: red, green, blue light, arm position
    epsilon             (N, 2, 4)  float    SCM noise before; noise encodings after
    intervention_labels (N,)       int      0..4
    intervention_masks  (N, 4)     bool/0-1 which variable was intervened on
    pressed             (N, 2, 3)  float    optional, unused

Every problem raises `CausalCircuitFormatError`, whose message is one line: what is wrong, the
file, and what to do.
"""

import io
import os
import re
import zipfile
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

DATASET_PAGE = "https://developer.qualcomm.com/software/ai-datasets/causalcircuit"
SPLITS = ("train", "val", "test")
NUM_CAUSAL = 4
NUM_SHARDS = 10
EXPECTED_FILES = "train.npz (or train-0.npz .. train-9.npz), val.npz and test.npz"
REQUIRED_KEYS = ("imgs", "original_latents", "epsilon", "intervention_labels",
                 "intervention_masks")
_SHAPES = {"imgs": (2,), "original_latents": (2, NUM_CAUSAL), "epsilon": (2, NUM_CAUSAL),
           "intervention_labels": (), "intervention_masks": (NUM_CAUSAL,)}
_REDOWNLOAD = f"re-download it from {DATASET_PAGE}"


class CausalCircuitFormatError(ValueError):
    """A download directory or file that is not CausalCircuit data; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def _missing(what: str, data_dir: str) -> CausalCircuitFormatError:
    return CausalCircuitFormatError(
        f"{what} in {data_dir}; download CausalCircuit from {DATASET_PAGE} and pass the "
        f"directory holding {EXPECTED_FILES}")


def split_files(data_dir: str) -> Dict[str, List[str]]:
    """{split: [paths]} of a download directory, train shards in order.

    Layouts: `train.npz`, or all ten shards `train-0.npz` .. `train-9.npz`. Both present is
    ambiguous (which one is current?) and an error, as is an incomplete or extra shard: a
    partial download must not silently give a smaller training set.
    """
    if not os.path.isdir(data_dir):
        raise CausalCircuitFormatError(
            f"the download directory {data_dir} does not exist; download CausalCircuit from "
            f"{DATASET_PAGE} and pass the directory holding {EXPECTED_FILES}")
    names = {n for n in os.listdir(data_dir) if os.path.isfile(os.path.join(data_dir, n))}
    shards = {}
    for name in names:
        match = re.fullmatch(r"train-(\d+)\.npz", name)
        if match:
            shards[int(match.group(1))] = name
    files = {}
    if shards and "train.npz" in names:
        raise CausalCircuitFormatError(
            f"both train.npz and train-<k>.npz shards are in {data_dir}; keep one layout "
            f"(train.npz, or all of train-0.npz .. train-9.npz) and move the other away")
    if shards:
        extra = sorted(shards[k] for k in shards if k >= NUM_SHARDS)
        if extra:
            raise CausalCircuitFormatError(
                f"unexpected training shard(s) {', '.join(extra)} in {data_dir}; the training "
                f"split has ten shards train-0.npz .. train-9.npz")
        absent = [f"train-{k}.npz" for k in range(NUM_SHARDS) if k not in shards]
        if absent:
            raise CausalCircuitFormatError(
                f"incomplete training shards in {data_dir}: {', '.join(absent)} missing; "
                f"download all of train-0.npz .. train-9.npz (or train.npz) from {DATASET_PAGE}")
        files["train"] = [os.path.join(data_dir, shards[k]) for k in range(NUM_SHARDS)]
    elif "train.npz" in names:
        files["train"] = [os.path.join(data_dir, "train.npz")]
    else:
        raise _missing("train.npz (or train-0.npz .. train-9.npz) missing", data_dir)
    for split in SPLITS[1:]:
        if f"{split}.npz" not in names:
            raise _missing(f"{split}.npz missing", data_dir)
        files[split] = [os.path.join(data_dir, f"{split}.npz")]
    return files


def _read_arrays(path: str) -> Dict[str, np.ndarray]:
    """The required arrays of one archive, read without pickle."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CausalCircuitFormatError(
            f"{path} is not a readable .npz archive ({e}); {_REDOWNLOAD}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CausalCircuitFormatError(
            f"{path} holds a single array, not an .npz archive of named arrays; {_REDOWNLOAD}")
    with archive:
        absent = [k for k in REQUIRED_KEYS if k not in archive.files]
        if absent:
            raise CausalCircuitFormatError(
                f"{path} lacks key(s) {', '.join(absent)} (it has {', '.join(archive.files)}); "
                f"a CausalCircuit file has {', '.join(REQUIRED_KEYS)}; {_REDOWNLOAD}")
        arrays = {}
        for key in REQUIRED_KEYS:
            try:
                arrays[key] = archive[key]
            except ValueError as e:  # object arrays need pickle, which we never allow
                raise CausalCircuitFormatError(
                    f"{path}: {key} is an object array ({e}); expected a numeric or fixed-length "
                    f"bytes (|S) array as on {DATASET_PAGE}") from None
            except (OSError, EOFError, zipfile.BadZipFile) as e:
                raise CausalCircuitFormatError(
                    f"{path}: cannot read {key} ({e}); {_REDOWNLOAD}") from None
    return arrays


def _first(bad: np.ndarray) -> int:
    """The first pair (row) with a True in `bad` [N, ...]."""
    return int(np.argwhere(bad.reshape(len(bad), -1).any(axis=1))[0, 0])


def load_file(path: str) -> Dict[str, np.ndarray]:
    """One validated archive: imgs |S [N, 2], original_latents and epsilon float32 [N, 2, 4],
    intervention_labels int64 [N], intervention_masks bool [N, 4]."""
    a = _read_arrays(path)
    imgs = a["imgs"]
    if imgs.ndim != 2 or imgs.shape[1] != 2:
        raise CausalCircuitFormatError(
            f"{path}: imgs has shape {imgs.shape}, expected (N, 2) (before / after images)")
    n = imgs.shape[0]
    for key, tail in _SHAPES.items():
        if a[key].shape != (n,) + tail:
            raise CausalCircuitFormatError(
                f"{path}: {key} has shape {a[key].shape}, expected "
                f"({', '.join(['N'] + [str(t) for t in tail])}{',' if not tail else ''}) with "
                f"N = {n} (the pairs in imgs); {_REDOWNLOAD}")
    if imgs.dtype.kind != "S":
        raise CausalCircuitFormatError(
            f"{path}: imgs has dtype {imgs.dtype}, expected fixed-length bytes (|S<L>) of JPEG "
            f"streams; {_REDOWNLOAD}")
    out = {"imgs": imgs}
    for key in ("original_latents", "epsilon"):
        if a[key].dtype.kind != "f":
            raise CausalCircuitFormatError(
                f"{path}: {key} has dtype {a[key].dtype}, expected floats; {_REDOWNLOAD}")
        bad = ~np.isfinite(a[key])
        if bad.any():
            raise CausalCircuitFormatError(
                f"{path}: {key} has {int(bad.sum())} non-finite value(s) (NaN or inf), the "
                f"first at pair {_first(bad)}; {_REDOWNLOAD}")
        out[key] = a[key].astype(np.float32)
    labels = a["intervention_labels"]
    if labels.dtype.kind not in "iu":
        raise CausalCircuitFormatError(
            f"{path}: intervention_labels has dtype {labels.dtype}, expected integers; "
            f"{_REDOWNLOAD}")
    bad = (labels < 0) | (labels > NUM_CAUSAL)
    if bad.any():
        i = _first(bad)
        raise CausalCircuitFormatError(
            f"{path}: intervention_labels[{i}] = {labels[i]}, expected 0..{NUM_CAUSAL}; "
            f"{_REDOWNLOAD}")
    out["intervention_labels"] = labels.astype(np.int64)
    masks = a["intervention_masks"]
    if masks.dtype.kind in "iu" and not np.isin(masks, (0, 1)).all():
        i = _first(~np.isin(masks, (0, 1)))
        raise CausalCircuitFormatError(
            f"{path}: intervention_masks[{i}] = {masks[i].tolist()}, expected 0/1 or booleans; "
            f"{_REDOWNLOAD}")
    if masks.dtype.kind not in "biu":
        raise CausalCircuitFormatError(
            f"{path}: intervention_masks has dtype {masks.dtype}, expected bool (or 0/1 "
            f"integers); {_REDOWNLOAD}")
    masks = masks.astype(bool)
    # Only "at most one target" is checked: the dataset page does not say how labels map to
    # mask columns (nor that label 0 means "no intervention"), and the reference only uses
    # labels for permutation-invariant accuracies, so a label <-> mask rule could reject a
    # genuine download. (The toy data follow label 0 = empty mask, label k = mask[k - 1].)
    bad = masks.sum(axis=1) > 1
    if bad.any():
        i = _first(bad)
        raise CausalCircuitFormatError(
            f"{path}: intervention_masks[{i}] = {masks[i].astype(int).tolist()} marks several "
            f"variables, expected at most one intervention target per pair; {_REDOWNLOAD}")
    out["intervention_masks"] = masks
    return out


def load_split(paths: List[str], split: str) -> Dict[str, np.ndarray]:
    """The validated arrays of a split (shards concatenated in order), as `load_file`."""
    parts = [load_file(p) for p in paths]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if len(out["imgs"]) == 0:
        raise CausalCircuitFormatError(
            f"the {split} split ({', '.join(map(os.path.basename, paths))}) holds no pairs; "
            f"{_REDOWNLOAD}")
    return out


def decode_jpeg(data: bytes, resolution: Optional[int], where: str,
                expected_size: Optional[int] = None) -> np.ndarray:
    """JPEG bytes -> uint8 [H, W, 3] (resized to [resolution, resolution, 3] when given).

    The image must be an RGB JPEG, square, and `expected_size` wide when that is given (512 for
    the download; the toy data are 64). Resizing is PIL's BOX filter: area averaging, for
    512 -> 64 exactly the mean of each 8x8 block (no aliasing of the thin arm; bilinear with a
    fixed 2x2 support would skip most pixels when shrinking 8x). `where` names the image in
    errors, e.g. "train.npz pair 17 image 1".
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            fmt, mode, size = image.format, image.mode, image.size
            if fmt == "JPEG" and mode == "RGB" and resolution and size != (resolution,) * 2:
                image = image.resize((resolution, resolution), Image.Resampling.BOX)
            pixels = np.array(image, dtype=np.uint8)
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ...) on bad bytes
        reason = ("no known image format" if isinstance(e, Image.UnidentifiedImageError)
                  else f"{type(e).__name__}: {e}")
        raise CausalCircuitFormatError(
            f"{where}: corrupt image data ({reason}); {_REDOWNLOAD}") from None
    if fmt != "JPEG":
        raise CausalCircuitFormatError(f"{where}: a {fmt} image, expected JPEG; {_REDOWNLOAD}")
    if mode != "RGB":
        raise CausalCircuitFormatError(
            f"{where}: image mode {mode}, expected RGB; {_REDOWNLOAD}")
    width, height = size
    if width != height or (expected_size is not None and width != expected_size):
        want = f"{expected_size}x{expected_size}" if expected_size else "a square image"
        raise CausalCircuitFormatError(
            f"{where}: image is {width}x{height}, expected {want}; {_REDOWNLOAD}")
    return pixels


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """uint8 [H, W, 3] -> JPEG bytes (no chroma subsampling: small coloured shapes keep their
    colour at 64x64)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()
