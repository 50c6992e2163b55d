"""Training never loses a run: one writer per run directory, checkpoints that a full disk cannot truncate, a
resume from the newest intact checkpoint, metrics rows that survive a kill, resume bit-identical to an
uninterrupted run, and a resume with another network refused before anything is written."""

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import yaml

from mixscale import api
from mixscale.model import load_model
from mixscale.train.checkpoints import is_intact, newest_intact_checkpoint

CLI = [sys.executable, "-m", "mixscale.cli.main"]


def _wait_for(predicate, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _epochs(metrics_csv):
    with open(metrics_csv) as f:
        return [int(r["epoch"]) for r in csv.DictReader(f) if r.get("val_loss")]


def _slow(cfg, epochs):
    """Epochs long enough (about a second) to act between them."""
    cfg["trainer"]["max_epochs"] = epochs
    cfg["data"]["samples_per_epoch"] = 64
    cfg["net"]["depth"] = 12
    return cfg


def _write(cfg, path):
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_second_run_on_the_same_run_dir_is_refused_while_the_first_runs(tiny_config, tmp_path):
    config = _write(_slow(tiny_config, 40), tmp_path / "c.yaml")
    first = subprocess.Popen(CLI + ["train", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "run"
    try:
        assert _wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").is_file()), "first run never checkpointed"
        first.send_signal(signal.SIGSTOP)  # alive, whatever the speed of this machine
        for extra in ([], ["--resume"]):
            second = subprocess.run(CLI + ["train", str(config), *extra], capture_output=True, text=True)
            assert second.returncode != 0 and f"in use by pid {first.pid}" in second.stderr, second.stderr
        assert not (run_dir / "config.resumed.yaml").exists()
    finally:
        first.kill()
        first.wait()
    # the killed run left its lock: stale (no such process), so a resume takes it over
    assert (run_dir / "run.lock").is_file()
    result = api.train(_slow(tiny_config, 3), resume=True)
    assert result.model_path.is_file() and not (run_dir / "run.lock").exists()


def test_a_lock_held_on_another_host_is_never_broken(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.lock").write_text('{"pid": 1, "host": "elsewhere", "started": 0, "what": "training"}')
    with pytest.raises(RuntimeError, match="in use by pid 1 on host 'elsewhere'.*remove .*run.lock"):
        api.train(tiny_config)
    cli = subprocess.run(CLI + ["train", str(_write(tiny_config, tmp_path / "c.yaml"))], capture_output=True,
                         text=True)  # the command line says it in one line, without a traceback
    assert cli.returncode == 2 and "Traceback" not in cli.stderr, cli.stderr
    assert re.search(r"mixscale train: error: .*in use by pid 1 on host 'elsewhere'", cli.stderr), cli.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.lock"]


def _mount_tmpfs(path, size):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.decode().strip()}")


def _fill(folder, leave_bytes):
    """Take all free space of the file system of ``folder`` but ``leave_bytes``."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(free - leave_bytes, 0))


def test_a_full_disk_leaves_no_truncated_checkpoint_and_the_run_resumes(tiny_config, tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "16m")
    try:
        tiny_config["run_dir"] = str(disk / "run")
        api.train(tiny_config)  # 2 epochs, checkpoints of a few hundred kB
        size = (disk / "run" / "checkpoints" / "last.ckpt").stat().st_size
        _fill(disk, size // 3)
        config = _write(dict(tiny_config, trainer={**tiny_config["trainer"], "max_epochs": 4}), tmp_path / "c.yaml")
        r = subprocess.run(CLI + ["train", str(config), "--resume"], capture_output=True, text=True)
        assert r.returncode != 0 and "no space left" in r.stderr.lower(), r.stderr[-2000:]
        ckpts = disk / "run" / "checkpoints"
        names = sorted(p.name for p in ckpts.iterdir())
        assert names == ["best.ckpt", "last.ckpt"], names  # no temporary left behind
        assert all(is_intact(ckpts / n) for n in names)
        assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 1
        (disk / "filler").unlink()
        resumed = api.train(config, resume=True)
        assert _epochs(resumed.metrics_csv) == [0, 1, 2, 3]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_resume_takes_the_newest_intact_checkpoint(tiny_config, tmp_path):
    first = api.train(tiny_config)
    ckpts = first.run_dir / "checkpoints"
    data = (ckpts / "last.ckpt").read_bytes()
    (ckpts / "last.ckpt").write_bytes(data[:4096])  # what an older version left after a full disk
    assert not is_intact(ckpts / "last.ckpt") and is_intact(ckpts / "best.ckpt")
    assert newest_intact_checkpoint(first.run_dir) == ckpts / "best.ckpt"
    resumed = api.train(tiny_config, overrides=["trainer.max_epochs=3"], resume=True)
    assert torch.load(resumed.last_checkpoint, map_location="cpu", weights_only=False)["epoch"] == 2
    (ckpts / "best.ckpt").write_bytes(b"")
    (ckpts / "last.ckpt").write_bytes(b"PK")
    with pytest.raises(FileNotFoundError, match="no intact checkpoint"):
        api.train(tiny_config, overrides=["trainer.max_epochs=4"], resume=True)


def _kill_after_epoch(config, run_dir, epoch, extra=()):
    """Start ``mixscale train`` and SIGKILL it once ``last.ckpt`` holds ``epoch``."""
    proc = subprocess.Popen(CLI + ["train", str(config), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last = run_dir / "checkpoints" / "last.ckpt"

    def reached():
        if not last.is_file():
            return False
        try:
            return torch.load(last, map_location="cpu", weights_only=False)["epoch"] >= epoch
        except Exception:  # being renamed into place
            return False

    try:
        assert _wait_for(reached), "the run never reached the epoch"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_kill_and_resume_equals_an_uninterrupted_run_bit_for_bit(tiny_config, tmp_path):
    clean = api.train(_slow(tiny_config, 6), overrides=[f"run_dir={tmp_path / 'clean'}"])
    config = _write(_slow(tiny_config, 6), tmp_path / "c.yaml")
    _kill_after_epoch(config, tmp_path / "run", 2)
    resumed = api.train(config, resume=True)
    a, b = load_model(clean.model_path)[0].state_dict(), load_model(resumed.model_path)[0].state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0
    la = torch.load(clean.last_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    lb = torch.load(resumed.last_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(la[k], lb[k]) for k in la)


def test_a_kill_during_a_resumed_run_loses_no_metrics_row(tiny_config, tmp_path):
    config = _write(_slow(tiny_config, 2), tmp_path / "c.yaml")
    api.train(config)
    longer = _write(_slow(tiny_config, 8), tmp_path / "longer.yaml")
    _kill_after_epoch(longer, tmp_path / "run", 4, extra=["--resume"])
    logs = tmp_path / "run" / "logs"
    kept = sorted(set(_epochs(logs / "metrics.earlier.csv")) | set(_epochs(logs / "metrics.csv")))
    assert kept[:5] == [0, 1, 2, 3, 4]
    result = api.train(longer, resume=True)
    assert _epochs(result.metrics_csv) == list(range(8))
    assert not (logs / "metrics.earlier.csv").exists()


def test_resume_with_another_network_is_refused_before_anything_is_written(tiny_config, tmp_path):
    api.train(tiny_config)
    run_dir = tmp_path / "run"
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"different config \(net.depth: 4 -> 6\).*may change only"):
        api.train(tiny_config, overrides=["net.depth=6", "trainer.max_epochs=3"], resume=True)
    assert not (run_dir / "config.resumed.yaml").exists()
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before
    r = subprocess.run(CLI + ["train", str(_write(dict(tiny_config, net={**tiny_config["net"], "depth": 6}),
                                                  tmp_path / "c.yaml")), "--resume"], capture_output=True, text=True)
    assert r.returncode != 0 and "net.depth: 4 -> 6" in r.stderr and "Traceback" not in r.stderr
    api.train(tiny_config, overrides=["trainer.max_epochs=3"], resume=True)  # a longer run is what resume is for


def test_lock_module_takes_over_stale_locks_and_refuses_live_ones(tmp_path):
    from mixscale._lock import LockedError, acquire, held, release

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = tmp_path / "x.lock"
    path.write_text(f'{{"pid": {int(dead.stdout)}, "host": "{socket.gethostname()}", "started": 0, "what": "t"}}')
    record = acquire(path, "testing")
    assert record["pid"] == os.getpid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        other = tmp_path / "y.lock"
        other.write_text(f'{{"pid": {sleeper.pid}, "host": "{socket.gethostname()}", "started": 0, "what": "t"}}')
        with pytest.raises(LockedError, match=f"pid {sleeper.pid}"):
            acquire(other, "testing")
    finally:
        sleeper.kill()
        sleeper.wait()
    release(path, record)
    assert not path.exists()
    with held(path, "again"):
        assert path.exists()
    assert not path.exists()
