"""CausalCircuit data: download checks, the toy generator, and the TFDS `causalcircuit` build
(ArrayRecord, read back through tfds.data_source, never importing TensorFlow)."""

import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from wscrl_jax.data.causalcircuit import builder, files, toy
from wscrl_jax.data.causalcircuit.files import CausalCircuitFormatError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"train": 32, "val": 8, "test": 8}


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    """Toy downloads of the real format: {"single": dir, "sharded": dir} (same seed)."""
    base = tmp_path_factory.mktemp("causalcircuit")
    return {layout: toy.write_toy_dataset(str(base / layout), **SIZES, layout=layout, seed=3)
            for layout in ("single", "sharded")}


def _copy(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def _rewrite(path, **changes):
    """Re-saves an archive with keys replaced (value None: key removed)."""
    with np.load(path) as archive:
        arrays = dict(archive)
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(path, **arrays)


def _jpeg(shape, mode="RGB"):
    buffer = io.BytesIO()
    Image.fromarray(np.full(shape, 90, np.uint8), mode).save(buffer, "JPEG")
    return buffer.getvalue()


def _with_image(path, data, row=0, col=0):
    with np.load(path) as archive:
        imgs = list(archive["imgs"].reshape(-1))
    imgs[2 * row + col] = data
    _rewrite(path, imgs=np.array(imgs, dtype=f"S{max(map(len, imgs))}").reshape(-1, 2))


def test_split_files_and_both_layouts_load_the_same(downloads):
    single, sharded = (files.split_files(downloads[k]) for k in ("single", "sharded"))
    assert [os.path.basename(p) for p in single["train"]] == ["train.npz"]
    assert [os.path.basename(p) for p in sharded["train"]] == [
        f"train-{k}.npz" for k in range(10)]
    a, b = (files.load_split(f["train"], "train") for f in (single, sharded))
    assert len(a["imgs"]) == SIZES["train"] and a["imgs"].dtype.kind == "S"
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["original_latents"].dtype == np.float32 and a["epsilon"].shape == (32, 2, 4)
    assert a["intervention_labels"].dtype == np.int64 and a["intervention_masks"].dtype == bool


@pytest.mark.parametrize("resolution", [None, 64])
def test_build_reads_back_every_field(downloads, tmp_path, resolution):
    data_dir = downloads["sharded"]
    path = builder.build(data_dir, str(tmp_path / "tfds"), resolution)
    assert os.path.isfile(os.path.join(path, "dataset_info.json"))
    sources = builder.data_sources(str(tmp_path / "tfds"), resolution)
    for split, paths in files.split_files(data_dir).items():
        want = files.load_split(paths, split)
        records = [sources[split][i] for i in range(len(sources[split]))]
        assert sorted(int(r["index"]) for r in records) == list(range(SIZES[split]))
        for r in records:
            i = int(r["index"])
            # 64x64 toy images are stored unchanged by both configs
            assert [bytes(b) for b in r["imgs"]] == [bytes(b) for b in want["imgs"][i]]
            for key in ("original_latents", "epsilon", "intervention_masks"):
                np.testing.assert_array_equal(r[key], want[key][i])
            assert int(r["intervention_labels"]) == want["intervention_labels"][i]


def test_res64_downsamples_by_area(tmp_path):
    data_dir = toy.write_toy_dataset(str(tmp_path / "raw"), 4, 2, 2, resolution=128)
    builder.build(data_dir, str(tmp_path / "tfds"), 64)
    sources = builder.data_sources(str(tmp_path / "tfds"), 64)
    want = files.load_split(files.split_files(data_dir)["val"], "val")
    for i in range(len(sources["val"])):
        r = sources["val"][i]
        small = files.decode_jpeg(bytes(r["imgs"][1]), None, "test")
        big = files.decode_jpeg(bytes(want["imgs"][int(r["index"]), 1]), None, "test")
        assert small.shape == (64, 64, 3) and big.shape == (128, 128, 3)
        area = big.reshape(64, 2, 64, 2, 3).astype(float).mean(axis=(1, 3))
        assert np.abs(small - area).mean() < 3.0


def test_build_twice_is_a_no_op(downloads, tmp_path, monkeypatch):
    path = builder.build(downloads["single"], str(tmp_path), 64)
    stamp = os.stat(os.path.join(path, "dataset_info.json")).st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("the download was checked again")
    monkeypatch.setattr(builder, "check_download", fail)
    assert builder.build(downloads["single"], str(tmp_path), 64) == path
    assert os.stat(os.path.join(path, "dataset_info.json")).st_mtime_ns == stamp


def test_failure_while_writing_leaves_nothing(downloads, tmp_path, monkeypatch):
    tfds_dir = str(tmp_path / "tfds")
    builder.build(downloads["single"], tfds_dir, 64)  # an earlier build must survive

    original = builder.Causalcircuit._generate_examples

    def broken(self, paths, converted):  # fails after TFDS has written a few records
        for n, example in enumerate(original(self, paths, converted)):
            if n == 3:
                raise RuntimeError("simulated failure while writing")
            yield example
    monkeypatch.setattr(builder.Causalcircuit, "_generate_examples", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        builder.build(downloads["single"], tfds_dir, None)
    assert sorted(os.listdir(os.path.join(tfds_dir, "causalcircuit"))) == [".config", "res64"]
    monkeypatch.undo()
    assert len(builder.data_sources(tfds_dir, 64)["test"]) == SIZES["test"]
    fresh = str(tmp_path / "fresh")
    monkeypatch.setattr(builder.Causalcircuit, "_generate_examples", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        builder.build(downloads["single"], fresh, 64)
    assert not os.path.exists(fresh)


def test_data_sources_of_a_missing_build(tmp_path):
    with pytest.raises(builder.CausalCircuitNotBuiltError) as e:
        builder.data_sources(str(tmp_path), 64)
    assert "scripts/build_causalcircuit.py" in str(e.value) and "\n" not in str(e.value)


def _n(d):
    return len(np.load(os.path.join(d, "test.npz"))["imgs"])


MALFORMED = {
    "missing split": (lambda d: os.remove(os.path.join(d, "val.npz")), "val.npz missing"),
    "wrong key": (lambda d: _rewrite(os.path.join(d, "test.npz"), intervention_masks=None,
                                     masks=np.zeros((_n(d), 4), bool)),
                  "lacks key(s) intervention_masks"),
    "corrupt jpeg": (lambda d: _with_image(os.path.join(d, "train.npz"), b"\xff\xd8garbage", 1, 1),
                     "train.npz pair 1 image 1: corrupt"),
    "truncated jpeg": (lambda d: _with_image(os.path.join(d, "val.npz"), _jpeg((64, 64, 3))[:300]),
                       "val.npz pair 0 image 0: corrupt"),
    "not square": (lambda d: _with_image(os.path.join(d, "test.npz"), _jpeg((48, 64, 3)), 2),
                   "test.npz pair 2 image 0: image is 64x48"),
    "other size": (lambda d: _with_image(os.path.join(d, "test.npz"), _jpeg((32, 32, 3))),
                   "expected 64x64"),
    "grey image": (lambda d: _with_image(os.path.join(d, "test.npz"), _jpeg((64, 64), "L")),
                   "image mode L, expected RGB"),
    "nan latents": (lambda d: _rewrite(os.path.join(d, "val.npz"), original_latents=np.where(
        np.arange(_n(d) * 8).reshape(-1, 2, 4) == 13, np.nan, 0.5)),
        "original_latents has 1 non-finite value(s) (NaN or inf), the first at pair 1"),
    "wrong shape": (lambda d: _rewrite(os.path.join(d, "test.npz"),
                                       epsilon=np.zeros((_n(d), 2, 3))),
                    "epsilon has shape (8, 2, 3), expected (N, 2, 4) with N = 8"),
    "object array": (lambda d: _rewrite(os.path.join(d, "test.npz"), imgs=np.array(
        [[b"a", b"b"]] * _n(d), dtype=object)), "imgs is an object array"),
    "label range": (lambda d: _rewrite(os.path.join(d, "test.npz"), intervention_labels=np.full(
        _n(d), 7)), "intervention_labels[0] = 7, expected 0..4"),
    "two targets": (lambda d: _rewrite(os.path.join(d, "test.npz"), intervention_masks=np.ones(
        (_n(d), 4), np.int64)), "expected at most one intervention target"),
    "shard missing": (lambda d: (toy.write_toy_dataset(d, 20, 2, 2, layout="sharded"),
                                 os.remove(os.path.join(d, "train.npz")),
                                 os.remove(os.path.join(d, "train-3.npz"))),
                      "train-3.npz missing"),
    "both layouts": (lambda d: toy.write_toy_dataset(d, 20, 2, 2, layout="sharded"),
                     "both train.npz and train-<k>.npz"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_download_one_line_and_nothing_written(downloads, tmp_path, case):
    data_dir = _copy(downloads["single"], tmp_path / "raw")
    damage, message = MALFORMED[case]
    damage(data_dir)
    tfds_dir = str(tmp_path / "tfds")
    with pytest.raises(CausalCircuitFormatError) as e:
        builder.build(data_dir, tfds_dir, 64)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not os.path.exists(tfds_dir)


def test_missing_directory_names_page_and_files(tmp_path):
    with pytest.raises(CausalCircuitFormatError) as e:
        files.split_files(str(tmp_path / "nope"))
    assert files.DATASET_PAGE in str(e.value) and "train-0.npz" in str(e.value)


def test_toy_pairs_follow_the_graph():
    pairs = toy.sample_toy_pairs(3000, np.random.default_rng(0))
    z, eps = pairs["original_latents"], pairs["epsilon"]
    labels, masks = pairs["intervention_labels"], pairs["intervention_masks"]
    assert ((z > 0) & (z < 1)).all()
    assert np.all(np.bincount(labels, minlength=5) / len(labels) > 0.16)
    np.testing.assert_array_equal(masks.sum(1), labels > 0)
    np.testing.assert_array_equal(masks[labels > 0].argmax(1), labels[labels > 0] - 1)
    np.testing.assert_allclose(toy.toy_solve(eps[:, 0]), z[:, 0], atol=1e-12)
    np.testing.assert_allclose(toy.toy_solve(eps[:, 1]), z[:, 1], atol=1e-12)
    for k in range(4):
        rows = labels == k + 1
        allowed = toy.descendants(k).copy()
        allowed[k] = True
        changed = z[rows, 1] != z[rows, 0]
        assert not changed[:, ~allowed].any()  # non-descendants keep their values exactly
        assert changed[:, k].all()
        np.testing.assert_array_equal(eps[rows][:, 1, ~masks[rows][0]],
                                      eps[rows][:, 0, ~masks[rows][0]])
    np.testing.assert_array_equal(z[labels == 0, 0], z[labels == 0, 1])
    assert toy.TOY_GRAPH.sum() >= 4 and not np.diag(toy.TOY_GRAPH).any()


def test_toy_images_show_every_variable():
    base = np.full((1, 4), 0.5)
    for k in range(4):
        low, high = base.copy(), base.copy()
        low[0, k], high[0, k] = 0.1, 0.9
        a, b = toy.render(np.concatenate([low, high]), 64).astype(int)
        assert (np.abs(a - b).max(-1) > 60).sum() >= 20, toy.TOY_VARIABLES[k]
    pairs = toy.sample_toy_pairs(64, np.random.default_rng(1))
    z = pairs["original_latents"]
    images = toy.render(z.reshape(-1, 4), 64).reshape(64, 2, 64, 64, 3).astype(int)
    diff = np.abs(images[:, 0] - images[:, 1]).max(axis=(1, 2, 3))
    moved = np.abs(z[:, 0] - z[:, 1]).max(1)
    assert (diff[moved == 0] == 0).all() and (diff[moved > 0.1] > 10).all()


def test_toy_dataset_is_deterministic_and_in_the_real_format(tmp_path):
    a = toy.write_toy_dataset(str(tmp_path / "a"), 5, 2, 2, seed=7)
    b = toy.write_toy_dataset(str(tmp_path / "b"), 5, 2, 2, seed=7)
    with np.load(os.path.join(a, "train.npz")) as x, np.load(os.path.join(b, "train.npz")) as y:
        assert sorted(x.files) == sorted(files.REQUIRED_KEYS + ("pressed",))
        assert x["imgs"].dtype.kind == "S" and x["imgs"].shape == (5, 2)
        assert x["original_latents"].dtype == np.float64 and x["pressed"].shape == (5, 2, 3)
        assert x["intervention_masks"].dtype == bool
        for key in x.files:
            np.testing.assert_array_equal(x[key], y[key])


def _run(code_or_script, *args):
    cmd = [sys.executable] + (["-c", code_or_script] if not args else [code_or_script, *args])
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120,
                          check=False)


def test_script_missing_directory_exits_2(tmp_path):
    result = _run(os.path.join(ROOT, "scripts", "build_causalcircuit.py"),
                  "--data_dir", str(tmp_path / "nope"), "--tfds_dir", str(tmp_path / "t"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0]
    assert not os.path.exists(tmp_path / "t")


def test_build_and_read_never_import_tensorflow(tmp_path):
    code = f"""
import sys
from wscrl_jax.data.causalcircuit import builder, toy
raw = toy.write_toy_dataset({str(tmp_path / 'raw')!r}, 4, 2, 2)
builder.build(raw, {str(tmp_path / 'tfds')!r}, 64)
record = builder.data_sources({str(tmp_path / 'tfds')!r}, 64)['train'][0]
assert record['imgs'].shape == (2,)
assert 'tensorflow' not in sys.modules, 'tensorflow was imported'
print('ok')
"""
    result = _run(code)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
