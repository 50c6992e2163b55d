"""Training data left on disk (data.lazy): a zarr volume with labels on 3 slices trains while the image is
read patch by patch (plus one sequential pass for its hash and a plane sample for its statistics), the label
volume is held as its labelled planes, and the patches equal those of the same data read whole."""

import numpy as np
import pytest
import zarr

from mixscale import api
from mixscale.data import sparse
from mixscale.data.sparse import PlaneLabels, scan_label_planes
from mixscale.train import data as train_data
from mixscale.train.builder import build_data
from mixscale.config.load import validate_config as load_config

SHAPE = (24, 64, 80)
LABELLED = (3, 11, 20)


@pytest.fixture
def volume(tmp_path):
    rng = np.random.default_rng(0)
    truth = np.zeros(SHAPE, np.uint8)
    truth[:, 16:40, 20:60] = 1
    image = (truth * 2.0 + rng.normal(0, 0.5, SHAPE)).astype(np.float32)
    labels = np.zeros(SHAPE, np.uint8)  # scribble convention: 0 = unlabelled
    for z in LABELLED:
        labels[z, ::3, ::3] = truth[z, ::3, ::3] + 1
    zarr.open_array(str(tmp_path / "image.zarr"), mode="w", shape=SHAPE, chunks=(4, 32, 32), dtype="f4")[:] = image
    zarr.open_array(str(tmp_path / "labels.zarr"), mode="w", shape=SHAPE, chunks=(4, 32, 32), dtype="u1")[:] = labels
    return tmp_path, image, labels


def _config(tmp_path, **data):
    return {"version": 1, "run_dir": str(tmp_path / "run"),
            "data": {"train_images": str(tmp_path / "image.zarr"), "train_labels": str(tmp_path / "labels.zarr"),
                     "label_convention": "scribble", "num_classes": 2, "spatial_dims": 2, "patch_shape": [32, 32],
                     "slice_axis": 0, "samples_per_epoch": 16, "val_samples": 8, "batch_size": 4, **data},
            "net": {"name": "msd", "depth": 6, "dilations": [1, 2, 4]},
            "trainer": {"max_epochs": 4, "progress_bar": False, "accelerator": "cpu", "devices": 1}}


class _Counting:
    """A lazy array that records the shape of every read (then reads the real zarr array)."""

    def __init__(self, array, reads):
        self.array, self.reads = array, reads
        self.shape, self.dtype, self.chunks = array.shape, array.dtype, array.chunks

    def __getitem__(self, key):
        block = self.array[key]
        self.reads.append(tuple(np.shape(block)))
        return block


def test_a_volume_with_three_labelled_slices_trains_reading_only_patches(volume, monkeypatch):
    tmp_path, image, _ = volume
    reads = {"image": [], "labels": []}
    real_open = train_data.open_image

    def counting_open(address):
        kind = "image" if "image.zarr" in str(address) else "labels"
        return _Counting(real_open(address), reads[kind])

    monkeypatch.setattr(train_data, "open_image", counting_open)
    monkeypatch.setattr(sparse, "SLAB_BYTES", 100_000)  # slabs of 4 planes (one chunk), as a big volume has
    result = api.train(_config(tmp_path, lazy=True))
    slab_reads = [r for r in reads["image"] if r[1:] == SHAPE[1:] and r[0] > 1]
    planes = [r for r in reads["image"] if r[1:] == SHAPE[1:] and r[0] == 1]
    patches = [r for r in reads["image"] if r[1:] != SHAPE[1:]]
    assert sum(r[0] for r in slab_reads) == SHAPE[0]  # the hash: one sequential pass, slab by slab
    assert len(planes) <= 16  # the normalisation sample: labelled planes and evenly spaced ones
    assert patches and all(r == (1, 32, 32) for r in patches)  # training and validation: patch windows only
    assert [r[0] for r in reads["labels"]] == [1] * SHAPE[0]  # the label volume: scanned once, a plane at a time
    pred = api.predict(result.model_path, image, slice_axis=0)
    truth = np.zeros(SHAPE, np.uint8)
    truth[:, 16:40, 20:60] = 1
    assert (pred == truth).mean() > 0.9


def test_lazy_patches_equal_the_patches_of_the_data_read_whole(volume):
    tmp_path, _, _ = volume
    files = {"val_images": str(tmp_path / "image.zarr"), "val_labels": str(tmp_path / "labels.zarr")}
    lazy, whole = (build_data(load_config(_config(tmp_path, lazy=mode, **files))) for mode in (True, False))
    assert isinstance(lazy.train.sampler.labels[0], PlaneLabels)
    assert isinstance(whole.train.sampler.labels[0], np.ndarray)
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(20):
        (xa, ya), (xb, yb) = lazy.train.sampler.sample(a), whole.train.sampler.sample(b)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert lazy.image_sha256 == whole.image_sha256  # the streamed hash is the hash of the array
    # statistics from the plane sample: close to those of the whole volume
    assert abs(lazy.normalization["mean"][0] - whole.normalization["mean"][0]) < 0.1
    assert abs(lazy.normalization["std"][0] / whole.normalization["std"][0] - 1) < 0.05


def test_plane_labels_read_like_the_full_label_map(volume):
    _, _, labels = volume
    held = scan_label_planes(zarr.open_array(str(volume[0] / "labels.zarr"), mode="r"), convention="scribble",
                             num_classes=2, ignore_index=-1)
    full = labels.astype(np.int64) - 1
    assert sorted(held.planes) == list(LABELLED)
    for key in [(slice(2, 12), slice(5, 40), slice(0, 80)), (11,), (slice(None), 7), (slice(20, 24), 3, 3)]:
        np.testing.assert_array_equal(held[key], full[key])
    np.testing.assert_array_equal(held.labelled_flat(), np.flatnonzero(full != -1))
    with pytest.raises(TypeError, match="np.asarray would build the whole volume"):
        np.asarray(held)


def test_auto_stays_in_memory_for_small_data_and_lazy_refuses_what_it_cannot_do(volume, monkeypatch):
    tmp_path, _, _ = volume
    small = build_data(load_config(_config(tmp_path)))
    assert isinstance(small.train.sampler.labels[0], np.ndarray)
    monkeypatch.setattr(train_data, "LAZY_BYTES", 1000)
    big = build_data(load_config(_config(tmp_path)))
    assert isinstance(big.train.sampler.labels[0], PlaneLabels)
    from mixscale.data import write_image

    write_image(str(tmp_path / "flat.tif"), np.zeros((64, 80), np.float32))  # a 2D image above the limit
    write_image(str(tmp_path / "flat_labels.tif"), np.tile(np.array([0, 1, 2], np.uint8), 64 * 80 // 3 + 1)[
        :64 * 80].reshape(64, 80))
    flat = build_data(load_config(_config(tmp_path, train_images=str(tmp_path / "flat.tif"),
                                          train_labels=str(tmp_path / "flat_labels.tif"))))
    assert isinstance(flat.train.sampler.labels[0], np.ndarray)  # 'auto' leaves only volumes on disk
    with pytest.raises(ValueError, match="data.lazy=True is not allowed.*without data.bootstrap"):
        build_data(load_config(_config(tmp_path, lazy=True, bootstrap=True)))
