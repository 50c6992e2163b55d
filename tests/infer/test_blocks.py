"""Block grid, block store (markers, plan, races) and the Dask block runner."""

import json
import math
import threading

import numpy as np
import pytest
import torch
import zarr

from mixscale.infer.blocks import block_counts, block_grid, block_region, part_indices, run_blocks
from mixscale.infer.store import ArraySpec, BlockStore, chunk_shape
from mixscale.infer.tiled import is_out_of_memory, predict_tiled, predict_tiled_shrinking


@pytest.mark.parametrize("shape, block", [((5, 4), (2, 4)), ((13, 7, 9), (4, 3, 9)), ((1, 1), (3, 3))])
def test_block_grid_tiles_shape_exactly_once(shape, block):
    cover = np.zeros(shape, int)
    grid = block_grid(shape, block)
    for region in grid:
        cover[region] += 1
        assert all(s.stop - s.start <= b for s, b in zip(region, block))
    assert (cover == 1).all()
    assert len(grid) == math.prod(block_counts(shape, block))
    assert [block_region(i, shape, block) for i in range(len(grid))] == grid


def test_block_grid_and_parts_errors():
    with pytest.raises(ValueError, match=r"block_shape=\(0, 2\) is not allowed; expected 2 integers >= 1"):
        block_grid((4, 4), (0, 2))
    with pytest.raises(ValueError, match="out of range"):
        block_region(4, (4, 4), (2, 2))
    with pytest.raises(ValueError, match=r"part_id=3 is not allowed; expected an integer in \[0, 2\]"):
        part_indices(10, 3, 3)
    with pytest.raises(ValueError, match="num_parts=0 is not allowed; expected an integer >= 1"):
        part_indices(10, 0, 0)


def test_parts_partition_the_blocks():
    parts = [part_indices(10, 3, i) for i in range(3)]
    assert sorted(sum(parts, [])) == list(range(10))
    assert [len(p) for p in parts] == [4, 3, 3]


def test_chunks_divide_the_block_and_are_single_slices():
    assert chunk_shape((8, 1280, 1280)) == (1, 256, 256)
    assert chunk_shape((5, 300, 70)) == (1, 150, 70)
    for block in [(8, 1280, 1000), (3, 97, 512)]:
        c = chunk_shape(block)
        assert c[0] == 1 and all(b % k == 0 for b, k in zip(block, c))


def _prepare(path, plan, **kw):
    return BlockStore.prepare(path, shape=(6, 10, 8), block_shape=(2, 10, 8),
                              arrays=[ArraySpec("labels", "uint8"), ArraySpec("probabilities", "float16", (3,))],
                              plan=plan, **kw)


def test_store_layout_markers_and_plan(tmp_path):
    store = _prepare(tmp_path / "out.zarr", {"model": "a", "n": 1})
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    assert group["labels"].dtype == np.uint8 and group["probabilities"].dtype == np.float16
    assert group["labels"].shards == (2, 10, 8) and group["labels"].chunks == (1, 10, 8)
    assert group["probabilities"].shape == (3, 6, 10, 8) and group["probabilities"].chunks == (1, 1, 10, 8)
    region = (slice(2, 4), slice(0, 10), slice(0, 8))
    store.write_block(1, region, {"labels": np.full((2, 10, 8), 7, np.uint8),
                                  "probabilities": np.full((3, 2, 10, 8), 0.5, np.float16)})
    assert store.done() == {1}
    assert (group["labels"][2:4] == 7).all() and (group["labels"][:2] == 0).all()
    # same plan: resumed, markers kept; another plan: refused, nothing lost
    assert _prepare(tmp_path / "out.zarr", {"model": "a", "n": 1}).done() == {1}
    with pytest.raises(FileExistsError, match=r"other settings \(model: 'a' -> 'b'\)"):
        _prepare(tmp_path / "out.zarr", {"model": "b", "n": 1})
    assert BlockStore(tmp_path / "out.zarr").done() == {1}
    assert _prepare(tmp_path / "out.zarr", {"model": "b", "n": 1}, overwrite=True).done() == set()


def test_store_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "x.zarr").mkdir()
    (tmp_path / "x.zarr" / "keep.txt").write_text("data")
    with pytest.raises(FileExistsError, match="not a mixscale block-prediction store"):
        _prepare(tmp_path / "x.zarr", {"a": 1})
    assert (tmp_path / "x.zarr" / "keep.txt").read_text() == "data"


def test_concurrent_prepare_one_store_no_leftovers(tmp_path):
    errors, barrier = [], threading.Barrier(4)

    def go():
        barrier.wait()
        try:
            _prepare(tmp_path / "out.zarr", {"plan": 1})
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]
    assert json.loads((tmp_path / "out.zarr" / "zarr.json").read_text())["attributes"]["mixscale_plan"] == {"plan": 1}


class _Recorder:
    """A picklable block computation that records which blocks ran (threads only)."""

    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()

    def __call__(self, index):
        with self.lock:
            self.seen.append(index)
        return 10 * index


@pytest.mark.parametrize("scheduler", [None, "threads", "sync"])
def test_run_blocks_local_runs_each_index_once(scheduler):
    rec = _Recorder()
    assert run_blocks(rec, [3, 1, 4], scheduler=scheduler, blocks_in_flight=2) == 80
    assert sorted(rec.seen) == [1, 3, 4]


def test_run_blocks_errors():
    with pytest.raises(ValueError, match="scheduler='bogus'"):
        run_blocks(_Recorder(), [0], scheduler="bogus")
    with pytest.raises(ValueError, match="blocks_in_flight=0"):
        run_blocks(_Recorder(), [0], blocks_in_flight=0)


def test_shrinking_tiles_on_out_of_memory_gives_the_same_result():
    calls = []

    def picky(x):  # runs out of memory on tiles larger than 100 pixels
        calls.append(tuple(x.shape[2:]))
        if x.shape[2] * x.shape[3] > 100:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return 2 * x

    image = torch.randn(1, 37, 29)
    out = predict_tiled_shrinking(picky, image, tile_shape=64, overlap=0.25, min_tile=8)
    assert torch.equal(out, 2 * image)
    assert calls[:2] == [(37, 29), (18, 14)] and max(h * w for h, w in calls[2:]) <= 100


def test_shrinking_does_not_hide_other_errors():
    def broken(x):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        predict_tiled_shrinking(broken, torch.zeros(1, 8, 8), tile_shape=8)
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


@pytest.mark.parametrize("shape, region", [((1, 13, 11), (slice(2, 9), slice(0, 11))),
                                           ((2, 9, 8, 7), (slice(3, 9), slice(1, 4), slice(0, 7)))])
@pytest.mark.parametrize("tile, overlap, blend", [(4, 0.0, "constant"), (3, 0.5, "gaussian"), (5, 0.3, "gaussian")])
def test_region_tiling_of_a_pointwise_predictor_is_exact(shape, region, tile, overlap, blend):
    image = torch.randn(*shape)
    out = predict_tiled(lambda t: 2 * t, image, tile_shape=tile, overlap=overlap, blend=blend, halo=2,
                        region=region)
    assert torch.equal(out, 2 * image[(slice(None),) + region])


def test_region_errors():
    with pytest.raises(ValueError, match="region="):
        predict_tiled(lambda t: t, torch.zeros(1, 8, 8), tile_shape=4, region=(slice(0, 9), slice(0, 8)))


def test_shrinking_gives_up_at_the_smallest_tile():
    def always(x):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        predict_tiled_shrinking(always, torch.zeros(1, 40, 40), tile_shape=40, min_tile=16)
