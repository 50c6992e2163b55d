"""The plugin's decisions without a GUI: scribble checks, class counts, the config it trains, CLI lines, workers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from mixscale.napari.session import (PRESETS, ScribbleError, Settings, check_scribbles, class_counts, cli_commands,
                                     next_run_dir, training_config, uncertainty)


def test_check_scribbles_says_what_to_paint():
    image_shape = (8, 9)
    s = np.zeros(image_shape, np.uint8)
    with pytest.raises(ScribbleError, match="nothing is painted yet"):
        check_scribbles(image_shape, s)
    s[1, 1] = 2
    with pytest.raises(ScribbleError, match="only class 2 is painted: paint at least one more class"):
        check_scribbles(image_shape, s)
    s[2, 2] = 1
    assert check_scribbles(image_shape, s) == [1, 2]
    with pytest.raises(ScribbleError, match=r"has shape \(8, 9\) but the image has \(8, 10\)"):
        check_scribbles((8, 10), s)
    with pytest.raises(ScribbleError, match="negative values"):
        check_scribbles(image_shape, np.full(image_shape, -1, np.int32))


def test_class_counts_of_a_zarr_volume_read_by_planes(tmp_path):
    import zarr

    rng = np.random.default_rng(0)
    data = rng.integers(0, 4, size=(37, 11, 13)).astype(np.uint8)
    arr = zarr.open_array(str(tmp_path / "s.zarr"), mode="w", shape=data.shape, dtype="uint8", chunks=(1, 11, 13))
    arr[:] = data
    np.testing.assert_array_equal(class_counts(arr, chunk_planes=5), np.bincount(data.ravel()))
    np.testing.assert_array_equal(class_counts(data[0]), np.bincount(data[0].ravel()))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_the_training_config_validates_for_every_preset(preset, tmp_path):
    from mixscale.config import validate_config

    cfg = validate_config(training_config(run_dir=tmp_path / "run", image="i.zarr", labels="s.zarr", num_classes=3,
                                          class_names=["a", "b", "c"], init_from="m.safetensors",
                                          settings=Settings(preset=preset, spatial_dims=3, patch=32)))
    assert cfg.data.label_convention == "scribble" and cfg.data.split == "pixels"
    assert cfg.data.patch_shape == [32, 32, 32] and cfg.net.name == PRESETS[preset]["name"]
    assert cfg.init_from == "m.safetensors" and cfg.trainer.progress_bar is False


def test_bad_settings_name_the_value(tmp_path):
    with pytest.raises(ValueError, match=r"preset='MS-D 7' is not allowed; expected one of \['MS-D 50'"):
        training_config(run_dir=tmp_path, image="i", labels="s", num_classes=2, class_names=["a", "b"],
                        settings=Settings(preset="MS-D 7"))
    with pytest.raises(ValueError, match=r"device='gpu' is not allowed; expected 'cpu', 'cuda' or 'cuda:<index>'"):
        training_config(run_dir=tmp_path, image="i", labels="s", num_classes=2, class_names=["a", "b"],
                        settings=Settings(device="gpu"))


def test_cli_commands_parse_as_the_cli_reads_them():
    import shlex

    from mixscale.cli.main import build_parser

    train, predict = cli_commands("my work/run_001/config.yaml", "vol.zarr", "out.zarr").splitlines()
    args = build_parser().parse_args(shlex.split(train)[1:])
    assert args.command == "train" and args.config == "my work/run_001/config.yaml"
    args = build_parser().parse_args(shlex.split(predict)[1:])
    assert (args.model, args.input, args.output) == ("my work/run_001/model.safetensors", "vol.zarr", "out.zarr")


def test_uncertainty_is_one_minus_the_top_probability():
    p = np.array([[0.7, 0.5, 1 / 3], [0.2, 0.5, 1 / 3], [0.1, 0.0, 1 / 3]])
    np.testing.assert_allclose(uncertainty(p), [0.3, 0.5, 2 / 3], rtol=1e-6)


def test_next_run_dir_skips_existing(tmp_path):
    (tmp_path / "run_001").mkdir()
    assert next_run_dir(tmp_path) == tmp_path / "run_002"


def test_training_updates_stop_and_preview_without_a_gui(tmp_path):
    """The worker's generator on its own: steps, epochs and previews arrive; a stop ends the run early."""
    pytest.importorskip("lightning")
    import zarr

    from mixscale.napari.workers import training_updates
    from mixscale.recipes.samples import sample

    image, truth = sample("shapes")
    image, truth = image[:96, :96], truth[:96, :96]
    scribbles = np.zeros_like(truth)
    scribbles[::8] = truth[::8]
    zarr.save_array(str(tmp_path / "i.zarr"), image)
    zarr.save_array(str(tmp_path / "s.zarr"), scribbles)
    config = training_config(run_dir=tmp_path / "run", image=str(tmp_path / "i.zarr"), labels=str(tmp_path / "s.zarr"),
                             num_classes=2, class_names=["a", "b"],
                             settings=Settings(preset="MS-D 50", epochs=500, patch=32, samples_per_epoch=8))
    import os

    import torch

    from mixscale.napari.workers import torch_threads

    assert torch_threads() == max(1, os.cpu_count() - 1)
    before = torch.get_num_threads()
    stop = threading.Event()
    kinds, threads, gen = [], set(), training_updates(config, stop, preview=lambda: (None, image))
    while True:
        try:
            update = next(gen)
        except StopIteration as done:
            result = done.value
            break
        kinds.append(update["kind"])
        if update["kind"] == "step":
            threads.add(update["threads"])
        if update["kind"] == "preview":
            assert update["probabilities"].shape == (2, 96, 96) and update["uncertainty"].shape == (96, 96)
            stop.set()
    assert {"step", "epoch", "preview"} <= set(kinds)
    assert threads == {torch_threads()}, "training leaves a core to the GUI thread"
    assert torch.get_num_threads() == before, "and gives it back afterwards"
    assert result.epochs < 10 and result.model_path.is_file()
