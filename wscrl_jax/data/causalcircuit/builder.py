"""The TFDS dataset `causalcircuit`: a validated CausalCircuit download as ArrayRecord files
(read back with `tfds.data_source`; TensorFlow is never imported).

Configs: `full` (the downloaded JPEGs byte for byte, 512x512 for the real data) and `res64`
(every image decoded, area-averaged to 64x64 and re-encoded as JPEG quality 95; images that
are already 64x64 keep their bytes). Each record is one pair:

    imgs                (2,)    object   JPEG bytes, before / after
    original_latents    (2, 4)  float32
    epsilon             (2, 4)  float32
    intervention_labels ()      int64
    intervention_masks  (4,)    bool
    index               ()      int64    the pair's position in the download's split (TFDS
                                         shuffles records; stage 1 writes codes in this order)

`build` checks every file and decodes every image before writing anything, so a malformed
download leaves no dataset behind; a failure while writing removes what was written.
"""

import concurrent.futures
import dataclasses
import glob
import logging
import os
import shutil
from typing import Dict, List, Optional

import numpy as np
import tensorflow_datasets as tfds

from wscrl_jax.data.causalcircuit.files import (DATASET_PAGE, EXPECTED_FILES, NUM_CAUSAL,
                                                SPLITS, CausalCircuitFormatError, decode_jpeg,
                                                encode_jpeg, load_file, split_files)

NAME = "causalcircuit"
CONFIGS = {None: "full", 64: "res64"}
_CHUNK = 2048  # images decoded per batch of threads (bounds the pending futures)
# image sides the image VAE takes (lcm/image_vae.py RESOLUTIONS; tests keep them equal)
VAE_SIZES = (64, 512)
_LOG = logging.getLogger(__name__)


class CausalCircuitNotBuiltError(CausalCircuitFormatError):
    """The TFDS dataset has not been built in the given directory (one-line message)."""


@dataclasses.dataclass
class CausalcircuitConfig(tfds.core.BuilderConfig):
    """resolution: side of the stored images; None keeps the downloaded JPEGs."""
    resolution: Optional[int] = None


class Causalcircuit(tfds.core.GeneratorBasedBuilder):
    """CausalCircuit pairs (robot arm, buttons and lights) before / after an intervention."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version: pairs with their download index."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download CausalCircuit from {DATASET_PAGE} and pass the directory holding "
        f"{EXPECTED_FILES} as the manual_dir (scripts/build_causalcircuit.py --data_dir).")
    BUILDER_CONFIGS = [
        CausalcircuitConfig(name="full", resolution=None,
                            description="The downloaded JPEGs unchanged (512x512)."),
        CausalcircuitConfig(name="res64", resolution=64,
                            description="Images area-averaged to 64x64, JPEG quality 95."),
    ]
    # {split: None (keep the downloaded bytes) or object [N, 2] of re-encoded JPEGs}; set by
    # `build` after its checks, else computed by _split_generators (e.g. under `tfds build`).
    converted: Optional[Dict[str, Optional[np.ndarray]]] = None

    def _info(self) -> tfds.core.DatasetInfo:
        t = tfds.features.Tensor
        return self.dataset_info_from_configs(
            description="CausalCircuit image pairs before / after an intervention.",
            homepage=DATASET_PAGE,
            features=tfds.features.FeaturesDict({
                "imgs": t(shape=(2,), dtype=np.object_),
                "original_latents": t(shape=(2, NUM_CAUSAL), dtype=np.float32),
                "epsilon": t(shape=(2, NUM_CAUSAL), dtype=np.float32),
                "intervention_labels": t(shape=(), dtype=np.int64),
                "intervention_masks": t(shape=(NUM_CAUSAL,), dtype=np.bool_),
                "index": t(shape=(), dtype=np.int64),
            }))

    def _split_generators(self, dl_manager):
        data_dir = os.fspath(dl_manager.manual_dir)
        if self.converted is None:
            self.converted = check_download(data_dir, self.builder_config.resolution)
        files = split_files(data_dir)
        return {split: self._generate_examples(files[split], self.converted[split])
                for split in SPLITS}

    def _generate_examples(self, paths: List[str], converted: Optional[np.ndarray]):
        offset = 0
        for path in paths:
            a = load_file(path)  # already checked; the arrays only (no decoding)
            for i in range(len(a["imgs"])):
                index = offset + i
                imgs = a["imgs"][i] if converted is None else converted[index]
                yield index, {
                    "imgs": np.array([bytes(b) for b in imgs], dtype=object),
                    "original_latents": a["original_latents"][i],
                    "epsilon": a["epsilon"][i],
                    "intervention_labels": a["intervention_labels"][i],
                    "intervention_masks": a["intervention_masks"][i],
                    "index": index,
                }
            offset += len(a["imgs"])


def _is_built(builder: Causalcircuit) -> bool:
    # The file test first: is_prepared() logs a warning for every directory that lacks it.
    info = os.path.join(os.fspath(builder.data_dir), "dataset_info.json")
    return os.path.isfile(info) and builder.is_prepared()


def config_name(resolution: Optional[int]) -> str:
    """"full" for None (the downloaded images), "res64" for 64."""
    if resolution not in CONFIGS:
        raise ValueError(f"resolution must be None (full, 512x512) or 64, got {resolution}")
    return CONFIGS[resolution]


def _convert(data: bytes, resolution: Optional[int], where: str, size: int) -> Optional[bytes]:
    """Decodes (the check); re-encoded JPEG bytes when the image must be resized, else None."""
    pixels = decode_jpeg(data, resolution, where, expected_size=size)
    return None if not resolution or resolution == size else encode_jpeg(pixels)


def check_download(data_dir: str, resolution: Optional[int] = None,
                   workers: Optional[int] = None) -> Dict[str, Optional[np.ndarray]]:
    """Checks every file of a download and decodes every image (threads: PIL decodes without
    the GIL); all images must be square RGB JPEGs of one size, the first one's. Returns
    {split: None, or object [N, 2] of JPEGs resized to `resolution`} (~2 KB a 64x64 image)."""
    files = split_files(data_dir)
    size, out = None, {}
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        for split in SPLITS:
            converted = []
            for path in files[split]:
                imgs = load_file(path)["imgs"].reshape(-1)
                where = [f"{path} pair {j // 2} image {j % 2}" for j in range(len(imgs))]
                if size is None and len(imgs):
                    size = decode_jpeg(bytes(imgs[0]), None, where[0]).shape[0]
                    check_size(size, resolution, data_dir)
                for s in range(0, len(imgs), _CHUNK):
                    chunk = slice(s, s + _CHUNK)
                    converted += pool.map(_convert, map(bytes, imgs[chunk]),
                                          [resolution] * len(where[chunk]), where[chunk],
                                          [size] * len(where[chunk]))
            if not converted:
                raise CausalCircuitFormatError(
                    f"the {split} split ({', '.join(map(os.path.basename, files[split]))}) in "
                    f"{data_dir} holds no pairs; re-download it from {DATASET_PAGE}")
            out[split] = (None if converted[0] is None
                          else np.array(converted, dtype=object).reshape(-1, 2))
    return out


def check_size(size: int, resolution: Optional[int], data_dir: str):
    """Refuses a download whose images the image VAE cannot take: stored unchanged they must
    be 64 or 512 pixels a side; resized to 64 they must be at least that large."""
    if resolution is None and size not in VAE_SIZES:
        todo = ("pass --resolution 64 to store them downscaled to 64x64" if size > 64 else
                "make them at least 64 pixels a side")
        raise CausalCircuitFormatError(
            f"the images in {data_dir} are {size}x{size} pixels; the image VAE takes "
            f"{' or '.join(map(str, VAE_SIZES))}: {todo}")
    if resolution is not None and size < resolution:
        raise CausalCircuitFormatError(
            f"the images in {data_dir} are {size}x{size} pixels, smaller than --resolution "
            f"{resolution}; make them at least {resolution} pixels a side")


def image_size(source) -> int:
    """The side in pixels of the first image of a built split's data source."""
    return decode_jpeg(bytes(source[0]["imgs"][0]), None, "the first pair").shape[0]


def _remove_new(paths_before: Dict[str, bool], config_dir: str):
    """Removes TFDS's leftovers of a failed build: its `incomplete.*` directories and every
    directory of `paths_before` (deepest first) that did not exist before the build."""
    for leftover in glob.glob(os.path.join(config_dir, "incomplete.*")):
        shutil.rmtree(leftover, ignore_errors=True)
    for path, existed in paths_before.items():
        if not existed and os.path.exists(path):
            shutil.rmtree(path, ignore_errors=True)


def build(data_dir: str, tfds_dir: str, resolution: Optional[int] = None,
          workers: Optional[int] = None) -> str:
    """Builds causalcircuit/<full|res64> from a download into tfds_dir (ArrayRecord); returns
    the prepared dataset's directory. A dataset already built there is left as it is."""
    config = config_name(resolution)
    builder = Causalcircuit(config=config, data_dir=tfds_dir)
    if _is_built(builder):
        _LOG.info("%s/%s is already built in %s; nothing to do", NAME, config,
                     builder.data_dir)
        return os.fspath(builder.data_dir)
    builder.converted = check_download(data_dir, resolution, workers)
    root = os.path.join(tfds_dir, NAME)
    config_dir = os.path.join(root, config)
    version_dir = os.fspath(builder.data_dir)
    paths_before = {p: os.path.exists(p) for p in (  # deepest first
        version_dir, config_dir, root, os.path.join(tfds_dir, "downloads"), tfds_dir)}
    try:
        builder.download_and_prepare(
            file_format="array_record",
            download_config=tfds.download.DownloadConfig(manual_dir=data_dir))
    except BaseException:
        _remove_new(paths_before, config_dir)
        raise
    _LOG.info("built %s/%s in %s", NAME, config, version_dir)
    return version_dir


def data_sources(tfds_dir: str, resolution: Optional[int] = None) -> Dict[str, object]:
    """{split: random-access source of records} of a built dataset."""
    config = config_name(resolution)
    if not _is_built(Causalcircuit(config=config, data_dir=tfds_dir)):
        flag = "" if resolution is None else f" --resolution {resolution}"
        raise CausalCircuitNotBuiltError(
            f"{NAME}/{config} is not built in {tfds_dir}; build it with python "
            f"scripts/build_causalcircuit.py --data_dir DOWNLOAD_DIR --tfds_dir {tfds_dir}{flag}")
    return tfds.data_source(f"{NAME}/{config}", data_dir=tfds_dir)
