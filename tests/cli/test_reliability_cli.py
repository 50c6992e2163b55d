"""The command line on real files and in real processes: outputs that are never replaced silently, options
refused before anything is written, a full disk, file modes, hopeless tiles, and logs that read well in a file.

The training run of :func:`piped_run` (stdout and stderr to pipes, as under a batch system or ``make demo >
log``) serves the log checks and, as the reference for file sizes, the full-disk check.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

CLI = [sys.executable, "-m", "mixscale.cli.main"]
PAGE = 4096


def _env() -> dict:
    """The environment of a user's shell: no warning options of the test run."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}


def _run(*args, timeout: float = 120, umask: int | None = None) -> subprocess.CompletedProcess:
    """``mixscale ARGS`` in a new process, stdout and stderr to pipes (not a terminal), decoded as they are
    (text mode would turn a progress bar's carriage returns into newlines)."""
    done = subprocess.run([*CLI, *map(str, args)], capture_output=True, env=_env(), timeout=timeout,
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))
    done.stdout, done.stderr = (b.decode("utf-8", "replace") for b in (done.stdout, done.stderr))
    return done


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _msd_file(path: Path, *, depth: int = 6, width: int = 1, classes: int = 2, seed: int = 0) -> Path:
    """A small random 2D MS-D model file (halo 12 with the default depth)."""
    import torch

    from mixscale.model import ModelInfo, save_model
    from mixscale.nets import create_net

    torch.manual_seed(seed)
    net = create_net("msd", spatial_dims=2, depth=depth, width=width, dilations=[1, 2, 3],
                     out_channels=classes)
    info = ModelInfo(net_name="msd", net_config=net.config(), task="segmentation",
                     class_names=[f"c{i}" for i in range(classes)])
    return save_model(path, net, info)


def _image(path: Path, shape=(64, 64), seed: int = 0) -> Path:
    from mixscale.data import write_image

    write_image(str(path), np.random.default_rng(seed).normal(size=shape).astype(np.float32))
    return path


# --- the shared training run ---------------------------------------------------------------------------------


def _write_data(folder: Path) -> dict[str, str]:
    """Training and validation stacks that differ (count, labelled share), so their data log lines differ."""
    from mixscale.data import write_image

    rng = np.random.default_rng(0)
    paths = {}
    for split, n in (("train", 3), ("val", 2)):
        lab = np.zeros((n, 40, 40), np.int16)
        for k in range(n):
            y, x = rng.integers(4, 24, size=2)
            lab[k, y:y + 12, x:x + 12] = 1
        img = (rng.normal(0, 0.3, size=lab.shape) + lab).astype(np.float32)
        if split == "val":
            lab[:, :4] = -1  # unlabelled rows (dense convention: ignore_index)
        for kind, array in (("images", img), ("labels", lab)):
            paths[f"{split}_{kind}"] = str(folder / f"{split}_{kind}.tif")
            write_image(paths[f"{split}_{kind}"], array)
    return paths


def _train_config(folder: Path, paths: dict, run_dir: Path, *, epochs: int) -> Path:
    """A config whose model file (an MS-D of width 16: ~140 kB) is large next to the small logs."""
    cfg = {"version": 1, "task": "segmentation", "run_dir": str(run_dir), "seed": 0,
           "data": {**paths, "num_classes": 2, "patch_shape": [24, 24], "samples_per_epoch": 8, "val_samples": 4,
                    "batch_size": 4},
           "net": {"name": "msd", "depth": 6, "width": 16, "dilations": [1, 2, 3]},
           "trainer": {"max_epochs": epochs, "accelerator": "cpu", "devices": 1}}
    path = folder / f"config_{run_dir.parent.name}_{epochs}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return folder, _write_data(folder)


@pytest.fixture(scope="module")
def piped_run(data, tmp_path_factory):
    """``mixscale train`` of two epochs with stdout and stderr to pipes; (result, run directory)."""
    folder, paths = data
    run_dir = tmp_path_factory.mktemp("piped") / "run"
    result = _run("train", _train_config(folder, paths, run_dir, epochs=2), umask=0o022)
    assert result.returncode == 0, result.stderr
    return result, run_dir


# --- 1. evaluate -o --------------------------------------------------------------------------------------------


def test_evaluate_refuses_to_replace_an_output_without_overwrite(tmp_path):
    from mixscale.data import write_image

    labels = np.random.default_rng(0).integers(0, 2, (20, 20)).astype(np.uint8)
    write_image(str(tmp_path / "pred.tif"), labels)
    write_image(str(tmp_path / "truth.tif"), labels)
    out = tmp_path / "m.json"
    out.write_text("precious")
    args = ["evaluate", tmp_path / "pred.tif", tmp_path / "truth.tif", "--num-classes", "2", "-o", out]
    refused = _run(*args)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"output {out} exists" in refused.stderr and "--overwrite" in refused.stderr
    assert out.read_text() == "precious"
    assert "f1_macro" not in refused.stdout  # refused before any work, not after
    replaced = _run(*args, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads(out.read_text())["accuracy"] == 1.0
    assert _names(tmp_path) == ["m.json", "pred.tif", "truth.tif"]  # written through a temporary name


def test_evaluate_checks_every_output_before_writing_any(tmp_path):
    from mixscale import api

    labels = np.zeros((8, 8), np.uint8)
    (tmp_path / "old.csv").write_text("precious")
    with pytest.raises(FileExistsError, match="old.csv exists"):
        api.evaluate(labels, labels, num_classes=2, out=tmp_path / "old.csv")
    with pytest.raises(ValueError, match=r"out='.*m\.txt' is not allowed; expected a metrics file ending in \.json"):
        api.evaluate(labels, labels, num_classes=2, out=tmp_path / "m.txt")
    result = _run("evaluate", *[_image(tmp_path / n, (8, 8)) for n in ("p.tif", "t.tif")], "--task", "regression",
                  "--data-range", "1", "-o", tmp_path / "new.json", "-o", tmp_path / "old.csv")
    assert result.returncode == 2 and "old.csv exists" in result.stderr
    assert not (tmp_path / "new.json").exists() and (tmp_path / "old.csv").read_text() == "precious"
    api.evaluate(labels, labels, num_classes=2, out=tmp_path / "old.csv", overwrite=True)
    assert (tmp_path / "old.csv").read_text().startswith("metric,value")


# --- 2. block-wise options checked before the store exists ---------------------------------------------------------


@pytest.mark.parametrize("option, message", [
    (["--workers", "0"], "--workers=0 is not allowed; expected an integer >= 1"),
    (["--scheduler", "thread"], "--scheduler='thread' is not allowed; expected one of ['threads', 'sync', "
                                "'processes'] or a dask.distributed address"),
])
def test_block_options_are_refused_before_the_store_is_created(tmp_path, option, message):
    model, image = _msd_file(tmp_path / "m.safetensors"), _image(tmp_path / "in.tif", (32, 32))
    result = _run("predict", model, image, "-o", tmp_path / "out.zarr", *option)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out.zarr").exists() and _names(tmp_path) == ["in.tif", "m.safetensors"]


def test_library_check_of_block_options_matches_the_command_line():
    from mixscale.cli import main as cli
    from mixscale.infer import blocks

    assert cli.LOCAL_SCHEDULERS == blocks.LOCAL_SCHEDULERS
    assert blocks.check_run_options(None, None) == (None, None)
    assert blocks.check_run_options("tcp://host:8786", 3) == ("tcp://host:8786", 3)
    with pytest.raises(ValueError, match=r"scheduler='thread' is not allowed; expected one of \['threads'"):
        blocks.check_run_options("thread")
    with pytest.raises(TypeError, match="scheduler=4 is not allowed"):
        blocks.check_run_options(4)
    with pytest.raises(ValueError, match="blocks_in_flight=0 is not allowed; expected an integer >= 1"):
        blocks.check_run_options("threads", 0)


# --- 3. a full disk while writing the model file ------------------------------------------------------------------


def _pages(path: Path) -> int:
    return sum(math.ceil(p.stat().st_size / PAGE) for p in path.rglob("*") if p.is_file())


@pytest.fixture
def small_tmpfs(tmp_path):
    """A function mounting a tmpfs of ``kib`` KiB at ``tmp_path/disk`` (unmounted afterwards); skips where
    mounting is not permitted."""
    mounted = []

    def mount(kib: int) -> Path:
        where = tmp_path / "disk"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root and mount permission): {done.stderr.strip()}")
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in mounted:
            if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_disk_while_writing_the_model_file_is_one_clear_error(data, piped_run, small_tmpfs):
    """The disk holds the run's checkpoints and logs (sized from the reference run) but not the model file."""
    folder, paths = data
    reference = piped_run[1]
    model_pages = math.ceil((reference / "model.safetensors").stat().st_size / PAGE)
    assert model_pages >= 16, "the model file must be large next to the size uncertainty"
    others = _pages(reference) - model_pages
    disk = small_tmpfs((others + 2 + model_pages // 2) * PAGE // 1024)  # +2: the lock and a metrics rewrite
    run_dir = disk / "run"
    result = _run("train", _train_config(folder, paths, run_dir, epochs=1))
    err = result.stderr
    assert result.returncode != 0 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mixscale train: error:") and "no space left" in last.lower(), err
    assert str(run_dir / "model.safetensors") in last
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()  # what fitted is kept
    assert not (run_dir / "model.safetensors").exists()
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".model.safetensors")]  # temporary removed


def test_save_model_on_a_full_disk_raises_an_os_error_naming_the_file(tmp_path, small_tmpfs):
    import errno

    disk = small_tmpfs(64)
    with pytest.raises(OSError, match=r"no space left on the device to write model file .*big\.safetensors") as info:
        _msd_file(disk / "big.safetensors", width=16)  # ~140 kB of weights
    assert info.value.errno == errno.ENOSPC
    assert _names(disk) == []


# --- 4. file modes ---------------------------------------------------------------------------------------------


def test_files_written_through_a_temporary_name_get_the_mode_of_a_plain_open(tmp_path):
    from mixscale._files import atomic_path

    umask = os.umask(0o022)
    os.umask(umask)
    plain = 0o666 & ~umask
    with atomic_path(tmp_path / "a.bin") as tmp:
        os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600))  # as mkstemp (and safetensors) create files
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == plain
    (tmp_path / "b.bin").write_text("old")
    os.chmod(tmp_path / "b.bin", 0o640)
    with atomic_path(tmp_path / "b.bin") as tmp:
        os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600))
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o640  # open("w") keeps an existing file's mode
    with atomic_path(tmp_path / "folder") as tmp:
        os.mkdir(tmp, 0o700)
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o777 & ~umask


def test_the_run_directory_and_an_ensemble_file_have_the_users_umask(piped_run, tmp_path):
    run_dir = piped_run[1]
    modes = {p.relative_to(run_dir).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in run_dir.rglob("*")
             if p.is_file()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes  # umask 022
    members = [_msd_file(tmp_path / f"m{i}.safetensors", depth=2, seed=i) for i in range(2)]
    result = _run("ensemble", *members, "-o", tmp_path / "ens.safetensors", umask=0o027)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "ens.safetensors").stat().st_mode) == 0o640  # safetensors itself gives 0600


# --- 5. tiles too small for the network's halo ---------------------------------------------------------------------


def test_tiles_far_smaller_than_the_halo_are_refused_at_once(tmp_path):
    model, image = _msd_file(tmp_path / "m.safetensors"), _image(tmp_path / "in.tif")
    result = _run("predict", model, image, "-o", tmp_path / "out.tif", "--tile-shape", "1", timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "tile_shape=1 is not allowed; expected tiles of at least (6, 6) pixels with the network's halo of " \
           "(12, 12)" in result.stderr
    assert not (tmp_path / "out.tif").exists()
    fine = _run("predict", model, image, "-o", tmp_path / "out.tif", "--tile-shape", "24")
    assert fine.returncode == 0, fine.stderr


def test_tile_check_allows_whole_axes_and_pointwise_predictors():
    import torch

    from mixscale.infer.tiled import check_tile_shape, minimum_tile_shape, predict_tiled, predict_tiled_shrinking

    assert check_tile_shape((3, 64), (12, 12), (3, 100)) == (3, 64)  # a tile that covers a short axis is fine
    assert check_tile_shape(1, 0, (64, 64)) == (1, 1)  # no context: any tile is useful
    assert minimum_tile_shape((13, 1), (64, 64)) == (7, 1)
    with pytest.raises(ValueError, match=r"tile_shape=\(8, 2\) is not allowed; .* at least \(4, 4\) .* halo of "
                                         r"\(8, 8\)"):
        predict_tiled(lambda t: t, torch.zeros(1, 32, 32), tile_shape=(8, 2), halo=8)
    seen = []

    def always_out_of_memory(x):
        seen.append(tuple(x.shape[2:]))
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        predict_tiled_shrinking(always_out_of_memory, torch.zeros(1, 80, 80), tile_shape=80, halo=40, min_tile=4)
    assert len(seen) == 3  # tiles of 80, 40, 20 (= halo / 2), then it gives up: never smaller


# --- 6. logs without a terminal --------------------------------------------------------------------------------


def test_training_without_a_terminal_logs_plain_lines_once_without_advertisements(piped_run):
    """Needs mixscale.train.progress wired into build_trainer (display_options, PlainProgress)."""
    result, _ = piped_run
    everything = result.stdout + result.stderr
    assert "\r" not in everything and "it/s]" not in everything, "progress bars were drawn into a pipe"
    lines = [line for line in result.stderr.split("\n") if line.strip()]
    twice = sorted({line for line in lines if lines.count(line) > 1})
    assert not twice, f"lines logged twice: {twice}"
    assert "litlogger" not in everything and "Tip:" not in everything and "\N{ELECTRIC LIGHT BULB}" not in everything
    assert "deprecated" not in result.stderr.lower()
    epochs = [line for line in lines if re.search(r"mixscale\.train\.progress: epoch \d/2: \d+ steps", line)]
    assert len(epochs) == 2 and all("train_loss" in e and "val_loss" in e and " s" in e for e in epochs), lines


class _Terminal:
    def isatty(self):
        return True


def test_display_options_show_a_bar_only_on_a_terminal(monkeypatch):
    import io

    from mixscale.train.progress import display_options

    assert display_options(io.StringIO()) == {"enable_progress_bar": False}
    monkeypatch.setattr(sys, "stdout", _Terminal())
    assert display_options(_Terminal()) == {"enable_progress_bar": True}
    assert display_options(_Terminal(), progress_bar=False) == {"enable_progress_bar": False}
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # Lightning's bar draws on stdout: piped there, no bar
    assert display_options(_Terminal()) == {"enable_progress_bar": False}


def test_plain_progress_logs_one_line_per_epoch(caplog, tmp_path):
    import lightning as L
    import torch

    from mixscale.train.progress import PlainProgress

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
            return loss

        def validation_step(self, batch, _):
            self.log("val_loss", self.layer(batch[0]).pow(2).mean(), prog_bar=True)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(6, 2)), batch_size=2)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=False, callbacks=[PlainProgress()], default_root_dir=tmp_path,
                        accelerator="cpu", devices=1, log_every_n_steps=1)
    with caplog.at_level("INFO", logger="mixscale.train.progress"):
        trainer.fit(Tiny(), loader, loader)
    lines = [r.getMessage() for r in caplog.records if r.name == "mixscale.train.progress"]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert re.fullmatch(r"epoch 2/2: 3 steps \(6 in all\), train_loss \d\.\d{4}, val_loss \d\.\d{4}, \d+\.\d s",
                        lines[1]), lines
