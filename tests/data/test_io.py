"""Readers and writers: exact round trips on real files, laziness, atomicity, errors."""

import os
import pickle

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from mixscale.data import HDF5Array, SliceStack, image_info, natural_sort_key, open_image, read_image, write_image
from mixscale.data import _readers, _write

RNG = np.random.default_rng(0)
STACK_U16 = RNG.integers(0, 65535, (4, 21, 34)).astype(np.uint16)
IMG_F32 = RNG.normal(size=(19, 23)).astype(np.float32)
IMG_U8 = RNG.integers(0, 255, (17, 29)).astype(np.uint8)


def _listing(folder):
    return sorted(p.name for p in folder.rglob("*"))


@pytest.mark.parametrize(
    "name, array",
    [
        ("single.tif", IMG_F32),
        ("stack.tiff", STACK_U16),
        ("a.png", IMG_U8),
        ("b.png", STACK_U16[0]),
        ("c.npy", STACK_U16.astype(np.int32)),
        ("d.h5:/entry/data", STACK_U16),
        ("e.hdf5:deep/inside/x", IMG_F32),
        ("f.zarr", STACK_U16),
        ("g.zarr/group/labels", IMG_U8),
        ("folder/", STACK_U16),
        ("globbed/z*.png", STACK_U16.astype(np.uint8)),
        ("npys/s*.npy", STACK_U16),
    ],
)
def test_round_trip_is_exact(tmp_path, name, array):
    address = str(tmp_path / name)
    write_image(address, array)
    back = read_image(address)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    lazy = open_image(address)
    assert tuple(lazy.shape) == array.shape
    np.testing.assert_array_equal(np.asarray(lazy[1:3, 2:7]), array[1:3, 2:7])
    info = image_info(address)
    assert info["shape"] == array.shape and info["dtype"] == str(array.dtype)
    assert info["nbytes"] == array.nbytes and info["disk_bytes"] > 0
    # no temporary file or folder is left next to the output
    assert not [p for p in _listing(tmp_path) if p.endswith(".tmp")]


def test_bigtiff_forced_and_automatic(tmp_path, monkeypatch):
    write_image(tmp_path / "big.tif", STACK_U16, bigtiff=True)
    write_image(tmp_path / "small.tif", STACK_U16)
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff
    with tifffile.TiffFile(tmp_path / "small.tif") as tif:
        assert not tif.is_bigtiff
    np.testing.assert_array_equal(read_image(tmp_path / "big.tif"), STACK_U16)
    monkeypatch.setattr(_write, "BIGTIFF_THRESHOLD", 100)  # stands in for 2 GiB
    write_image(tmp_path / "auto.tif", STACK_U16)
    with tifffile.TiffFile(tmp_path / "auto.tif") as tif:
        assert tif.is_bigtiff
    with pytest.raises(ValueError, match="bigtiff=True applies to TIFF outputs only"):
        write_image(tmp_path / "x.npy", STACK_U16, bigtiff=True)


def test_compressed_outputs_round_trip(tmp_path):
    write_image(tmp_path / "c.tif", STACK_U16, compression="zlib", chunks=(16, 32))
    write_image(tmp_path / "c.h5:/d", STACK_U16, compression="gzip", chunks=(1, 21, 34))
    write_image(tmp_path / "z.zarr", STACK_U16, compression="zstd", chunks=(1, 8, 8))
    write_image(tmp_path / "n.zarr", STACK_U16, compression="none")
    for name in ("c.tif", "c.h5:/d", "z.zarr", "n.zarr"):
        np.testing.assert_array_equal(read_image(tmp_path / name), STACK_U16)
    assert image_info(tmp_path / "c.tif")["chunks"] == (1, 16, 32)
    assert image_info(tmp_path / "c.h5:/d")["chunks"] == (1, 21, 34)
    assert image_info(tmp_path / "z.zarr")["chunks"] == (1, 8, 8)
    assert image_info(tmp_path / "c.h5:/d")["disk_bytes"] < STACK_U16.nbytes * 1.1
    # a compressed TIFF cannot be memory-mapped; it is still opened lazily
    assert not isinstance(open_image(tmp_path / "c.tif"), np.ndarray)
    with pytest.raises(ValueError, match="compression='lzf' is not available.*allowed"):
        write_image(tmp_path / "bad.zarr", STACK_U16, compression="lzf")
    with pytest.raises(ValueError, match="NPY files take no chunks or compression"):
        write_image(tmp_path / "bad.npy", STACK_U16, chunks=(1, 2, 2))


def test_uncompressed_tiff_and_npy_open_as_memmaps(tmp_path):
    write_image(tmp_path / "s.tif", STACK_U16)
    write_image(tmp_path / "s.npy", STACK_U16)
    assert isinstance(open_image(tmp_path / "s.tif"), np.memmap)
    assert isinstance(open_image(tmp_path / "s.npy"), np.memmap)


def test_hdf5_open_is_lazy_and_survives_pickling(tmp_path):
    write_image(tmp_path / "v.h5:/entry/data", STACK_U16, chunks=(1, 21, 34))
    arr = open_image(f"{tmp_path}/v.h5:/entry/data")
    assert isinstance(arr, HDF5Array) and arr.chunks == (1, 21, 34)
    np.testing.assert_array_equal(arr[2, 3:9], STACK_U16[2, 3:9])
    clone = pickle.loads(pickle.dumps(arr))  # what a spawned data-loader worker does
    np.testing.assert_array_equal(clone[1], STACK_U16[1])
    arr.close()
    np.testing.assert_array_equal(arr[0, 0], STACK_U16[0, 0])  # reopens on access


def test_zarr_open_is_lazy(tmp_path):
    write_image(tmp_path / "v.zarr/scale/0", STACK_U16, chunks=(1, 10, 10))
    arr = open_image(tmp_path / "v.zarr/scale/0")
    assert isinstance(arr, zarr.Array)
    np.testing.assert_array_equal(arr[3, 5:15, 1:4], STACK_U16[3, 5:15, 1:4])
    # the store stays a valid group hierarchy that zarr itself can walk
    group = zarr.open_group(str(tmp_path / "v.zarr"), mode="r")
    np.testing.assert_array_equal(group["scale"]["0"][...], STACK_U16)


def test_folder_stack_reads_slices_on_demand(tmp_path, monkeypatch):
    write_image(tmp_path / "stack/", STACK_U16)
    calls = []
    original = _readers.read_slice
    monkeypatch.setattr(_readers, "read_slice", lambda p: calls.append(p.name) or original(p))
    stack = open_image(tmp_path / "stack")
    assert isinstance(stack, SliceStack) and len(calls) == 1  # the first slice gives shape/dtype
    calls.clear()
    np.testing.assert_array_equal(stack[2, 4:6], STACK_U16[2, 4:6])
    assert calls == ["slice_00002.tif"]


@pytest.mark.parametrize(
    "key",
    [1, -1, (slice(1, 3), 5), (..., 3), (slice(None, None, 2), slice(2, 9), 4),
     ([3, 0], slice(1, 4)), (np.array([True, False, True, True]),), (slice(3, 1),)],
)
def test_slice_stack_indexing_matches_numpy(tmp_path, key):
    write_image(tmp_path / "s/*.npy", STACK_U16)
    stack = open_image(tmp_path / "s/*.npy")
    np.testing.assert_array_equal(stack[key], STACK_U16[key])


def test_slice_stack_refuses_indices_it_cannot_match(tmp_path):
    write_image(tmp_path / "s/*.npy", STACK_U16)
    stack = open_image(tmp_path / "s/*.npy")
    with pytest.raises(TypeError, match="array indices on axis 0 only"):
        stack[[0, 1], [2, 3]]
    with pytest.raises(IndexError, match="out of range for axis 0 of size 4"):
        stack[4]


def test_natural_sort_orders_numbers_by_value(tmp_path):
    folder = tmp_path / "nat"
    folder.mkdir()
    for z in (10, 2, 1, 21, 3):
        tifffile.imwrite(folder / f"slice{z}.tif", np.full((4, 5), z, np.uint8))
    (folder / "notes.txt").write_text("not a slice")
    for address in (folder, folder / "slice*.tif"):
        stack = read_image(address)
        np.testing.assert_array_equal(stack[:, 0, 0], [1, 2, 3, 10, 21])
    assert sorted(["b10", "b9", "a100"], key=natural_sort_key) == ["a100", "b9", "b10"]


@pytest.mark.parametrize("name, target", [
    ("out.tif", "_write_tiff"), ("out.npy", "_write_npy"), ("out.png", "_write_png"),
    ("out.zarr", "_write_zarr_array"), ("new.h5:/x", "_write_hdf5_dataset"), ("stk/", "_write_tiff"),
])
def test_failed_write_leaves_nothing(tmp_path, monkeypatch, name, target):
    original = getattr(_write, target)

    def half_write(*args, **kwargs):
        original(*args, **kwargs)  # really write something, then die
        raise RuntimeError("disk full")

    monkeypatch.setattr(_write, target, half_write)
    array = STACK_U16[:2].astype(np.uint8) if name.endswith("/") else STACK_U16[0].astype(np.uint8)
    with pytest.raises(RuntimeError, match="disk full"):
        write_image(str(tmp_path / name), array)
    assert _listing(tmp_path) == []


def test_failed_write_into_existing_containers_keeps_them_valid(tmp_path, monkeypatch):
    write_image(tmp_path / "f.h5:/keep", IMG_U8)
    write_image(tmp_path / "s.zarr/keep", IMG_U8)

    def broken(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(_write, "_write_hdf5_dataset", broken)
    monkeypatch.setattr(_write, "_write_zarr_array", broken)
    for name in ("f.h5:/entry/new", "s.zarr/new"):
        with pytest.raises(RuntimeError, match="interrupted"):
            write_image(tmp_path / name, IMG_U8)
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert list(f) == ["entry", "keep"] and list(f["entry"]) == []
    assert sorted(os.listdir(tmp_path / "s.zarr")) == ["keep", "zarr.json"]
    np.testing.assert_array_equal(read_image(tmp_path / "s.zarr/keep"), IMG_U8)


@pytest.mark.parametrize("name", ["o.tif", "o.png", "o.npy", "o.h5:/d", "o.zarr", "o.zarr/a/b", "o/", "p/z*.tif"])
def test_overwrite_is_refused_unless_asked(tmp_path, name):
    write_image(tmp_path / name, IMG_U8[None] if "/" in name and "zarr" not in name else IMG_U8)
    new = (IMG_U8 // 2)[None] if "/" in name and "zarr" not in name else IMG_U8 // 2
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_image(tmp_path / name, new)
    write_image(tmp_path / name, new, overwrite=True)
    np.testing.assert_array_equal(read_image(tmp_path / name), new)
    assert not [p for p in _listing(tmp_path) if ".tmp" in p]


def test_hdf5_writes_several_datasets_into_one_file(tmp_path):
    write_image(tmp_path / "m.h5:/raw", STACK_U16)
    write_image(tmp_path / "m.h5:/seg/labels", IMG_U8)
    np.testing.assert_array_equal(read_image(tmp_path / "m.h5:/raw"), STACK_U16)
    np.testing.assert_array_equal(read_image(tmp_path / "m.h5:seg/labels"), IMG_U8)
    with pytest.raises(ValueError, match=r"names no dataset.*\['/raw', '/seg/labels'\]"):
        open_image(tmp_path / "m.h5")
    write_image(tmp_path / "one.h5", IMG_U8)  # no internal path: '/data'
    np.testing.assert_array_equal(read_image(tmp_path / "one.h5"), IMG_U8)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        open_image(tmp_path / "missing.tif")
    with pytest.raises(FileNotFoundError, match="nothing.h5"):
        read_image(tmp_path / "nothing.h5:/x")
    with pytest.raises(ValueError, match=r"unsupported extension '\.jpg'.*supported.*\.tif"):
        open_image(tmp_path / "photo.jpg")
    with pytest.raises(ValueError, match="unsupported extension"):
        write_image(tmp_path / "x.jpg", IMG_U8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="glob matches no file"):
        open_image(tmp_path / "empty" / "*.tif")
    with pytest.raises(FileNotFoundError, match="holds no slice files"):
        open_image(tmp_path / "empty")
    with pytest.raises(TypeError, match="address must be"):
        open_image(42)
    write_image(tmp_path / "f.h5:/entry/data", IMG_U8)
    with pytest.raises(ValueError, match=r"'/entry/dat' is not found.*available datasets: \['/entry/data'\]"):
        open_image(f"{tmp_path}/f.h5:/entry/dat")
    with pytest.raises(ValueError, match="'/entry' is a group"):
        open_image(f"{tmp_path}/f.h5:/entry")
    write_image(tmp_path / "s.zarr/a/b", IMG_U8)
    with pytest.raises(ValueError, match=r"'a/c' is not found.*available arrays: \['a/b'\]"):
        open_image(tmp_path / "s.zarr/a/c")
    with pytest.raises(ValueError, match=r"'\(root\)' is not an array"):
        open_image(tmp_path / "s.zarr")
    with pytest.raises(TypeError, match="PNG holds 2D uint8/uint16"):
        write_image(tmp_path / "f.png", IMG_F32)
    with pytest.raises(ValueError, match="stack needs an array with 3 or more axes"):
        write_image(tmp_path / "st/", IMG_U8)
    with pytest.raises(TypeError, match="must hold numbers"):
        write_image(tmp_path / "o.npy", np.array(["a"], dtype=object))


def test_mismatched_slices_fail_on_read(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    tifffile.imwrite(folder / "a1.tif", np.zeros((4, 4), np.uint8))
    tifffile.imwrite(folder / "a2.tif", np.zeros((5, 4), np.uint8))
    stack = open_image(folder)
    with pytest.raises(ValueError, match=r"a2\.tif.*shape \(5, 4\)"):
        stack[...]
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "a3.png")
    with pytest.raises(ValueError, match="mix formats"):
        open_image(folder)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("compression", [None, "zstd", "gzip", "blosc", "none"])
def test_zarr_sub_paths_follow_the_store_format(tmp_path, zarr_format, compression):
    zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=zarr_format)
    write_image(tmp_path / "s.zarr/pred/labels", IMG_U8, compression=compression, chunks=(8, 8))
    np.testing.assert_array_equal(read_image(tmp_path / "s.zarr/pred/labels"), IMG_U8)
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert group["pred/labels"].metadata.zarr_format == zarr_format
    with pytest.raises(ValueError, match="is a zarr array, not a group"):
        write_image(tmp_path / "s.zarr/pred/labels/deeper", IMG_U8)


def test_failed_stack_write_into_existing_folder_keeps_old_slices(tmp_path, monkeypatch):
    write_image(tmp_path / "stk/z*.npy", STACK_U16)
    calls = []
    original = _write._write_npy

    def fails_on_third(path, array, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("interrupted")
        original(path, array, **kwargs)

    monkeypatch.setattr(_write, "_write_npy", fails_on_third)
    with pytest.raises(RuntimeError, match="interrupted"):
        write_image(tmp_path / "stk/z*.npy", STACK_U16 // 2, overwrite=True)
    assert sorted(os.listdir(tmp_path / "stk")) == [f"z0000{i}.npy" for i in range(4)]
    np.testing.assert_array_equal(read_image(tmp_path / "stk/z*.npy"), STACK_U16)


def test_output_exists_knows_datasets_arrays_and_files(tmp_path):
    from mixscale.data import output_exists

    h5 = tmp_path / "f.h5"
    assert not output_exists(f"{h5}:/a")
    write_image(f"{h5}:/a", np.zeros((3, 4), np.uint8))
    assert output_exists(f"{h5}:/a") and not output_exists(f"{h5}:/b")  # a new dataset in an existing file
    z = tmp_path / "v.zarr"
    write_image(f"{z}/x", np.zeros((3, 4), np.uint8))
    assert output_exists(f"{z}/x") and not output_exists(f"{z}/y")
    tif = tmp_path / "t.tif"
    assert not output_exists(str(tif))
    write_image(str(tif), np.zeros((3, 4), np.uint8))
    assert output_exists(str(tif))


def test_zarr_v2_store_reads_lazily(tmp_path):
    import zarr

    from mixscale.data import image_info, open_image

    data = np.arange(480, dtype=np.uint16).reshape(4, 10, 12)
    zarr.create_array(str(tmp_path / "v2.zarr"), shape=data.shape, chunks=(1, 10, 12), dtype="uint16",
                      zarr_format=2)[:] = data
    arr = open_image(str(tmp_path / "v2.zarr"))
    assert not isinstance(arr, np.ndarray)  # lazy: slicing reads only the chunks needed
    assert np.array_equal(np.asarray(arr[1:3, 2:4, 5]), data[1:3, 2:4, 5])
    assert image_info(str(tmp_path / "v2.zarr"))["chunks"] == (1, 10, 12)
