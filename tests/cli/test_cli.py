"""The CLI end to end on a tiny data set in a temporary directory (real processes, real files)."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mixscale.cli.main import main
from mixscale.data import LabelConventionWarning


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mixscale.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_help_is_fast_and_lists_commands():
    t0 = time.perf_counter()
    out = _run("--help")
    elapsed = time.perf_counter() - t0
    assert out.returncode == 0
    for cmd in ("train", "predict", "evaluate", "info", "demo"):
        assert cmd in out.stdout
    assert elapsed < 3.0  # generous for a loaded CI machine; the import itself is well under a second
    code = "import sys, mixscale.cli.main; print('torch' in sys.modules, 'lightning' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == \
        ["False", "False"]


def test_train_predict_evaluate_info_end_to_end(tmp_path, tiny_config_file, tiny_dataset, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_config_file), "--set", "trainer.max_epochs=2"]) == 0
    for name in ("config.yaml", "model.safetensors", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                 "logs/metrics.csv"):
        assert (run / name).is_file(), name
    out = tmp_path / "pred.tif"
    assert main(["predict", str(run / "model.safetensors"), tiny_dataset["val_images"], "-o", str(out),
                 "--axis", "0"]) == 0
    from mixscale.data import read_image

    pred = read_image(str(out))
    assert pred.shape == (3, 40, 40) and pred.dtype == np.uint8
    again = [str(run / "model.safetensors"), tiny_dataset["val_images"], "-o", str(out), "--axis", "0"]
    assert main(["predict", *again]) == 2  # an existing output is never replaced silently
    assert "exists" in capsys.readouterr().err
    assert main(["predict", *again, "--overwrite"]) == 0
    prob = tmp_path / "prob.tif"
    assert main(["predict", *again[:2], "-o", str(prob), "--axis", "0", "--probabilities"]) == 0
    p = read_image(str(prob))
    assert p.shape == (2, 3, 40, 40) and np.allclose(p.sum(0), 1, atol=1e-5)
    assert (p.argmax(0) == read_image(str(out))).all()
    assert main(["predict", *again[:2], "-o", str(out), "--overwrite"]) == 2  # 2D model, 3D stack, no axis
    assert "pass slice_axis=0" in capsys.readouterr().err
    js = tmp_path / "m.json"
    assert main(["evaluate", str(out), tiny_dataset["val_labels"], "--num-classes", "2", "-o", str(js),
                 "-o", str(tmp_path / "m.csv")]) == 0
    table = capsys.readouterr().out
    assert "f1_macro" in table and 0 <= json.loads(js.read_text())["f1_macro"] <= 1
    assert (tmp_path / "m.csv").read_text().startswith("metric,value")
    assert main(["info", str(out)]) == 0
    assert "(3, 40, 40)" in capsys.readouterr().out
    assert main(["info", str(run / "model.safetensors")]) == 0
    shown = capsys.readouterr().out
    from mixscale.nets import msd_parameter_count

    assert "msd" in shown and f"parameters: {msd_parameter_count(1, 2, 4, 1, 2)}\n" in shown
    assert "receptive_field: 15\n" in shown  # 1 + 2 * (1 + 2 + 3 + 1)


def test_existing_run_is_never_overwritten(tmp_path, tiny_config_file, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("precious")
    assert main(["train", str(tiny_config_file)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "run" / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("override, message", [
    ("data.num_clases=3", "data.num_clases: unknown key"),
    ("trainer.max_epochs=lots", "trainer.max_epochs"),
    ("net.name=resnet", "unknown network name='resnet'"),
    ("net.depht=3", r"unknown argument\(s\) \['depht'\]"),
    ("loss=cee", "cee"),
    ("net.out_channels=3", r"net.out_channels=3 does not match the data, which needs 2"),
    ("trainer.accelerator=gpu", "trainer settings"),
    ("data.patch_shape=[3, 3]", "too small for reflect padding"),
])
def test_config_typos_give_one_clear_error(tmp_path, tiny_config_file, capsys, override, message):
    assert main(["train", str(tiny_config_file), "--set", override]) == 2
    err = capsys.readouterr().err
    assert "error" in err and __import__("re").search(message, err), err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # checked before anything is written


def test_bad_inputs_are_clear_errors(tmp_path, tiny_config, tiny_config_file, tiny_dataset, capsys):
    from mixscale.data import write_image

    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    lab = tmp_path / "lab.tif"
    write_image(str(lab), np.full((3, 40, 40), 5, np.uint8))  # a class outside 0..1
    with pytest.warns(LabelConventionWarning) as record:  # the convention check runs before the error
        assert main(["train", str(tiny_config_file), "--set", f"data.train_labels={lab}"]) == 2
    assert sorted(str(w.message) for w in record) == [
        "class 0 (stored as value 0) has no labelled pixels", "class 1 (stored as value 1) has no labelled pixels",
        "only 0 of 4800 pixels (0 %) are labelled; training will see very few examples"]
    assert "[5]" in capsys.readouterr().err
    shape = tmp_path / "small.tif"
    write_image(str(shape), np.zeros((3, 30, 40), np.uint8))
    with pytest.warns(LabelConventionWarning, match=r"^class 1 \(stored as value 1\) has no labelled pixels$"):
        assert main(["train", str(tiny_config_file), "--set", f"data.train_labels={shape}"]) == 2
    assert "spatial shape" in capsys.readouterr().err
    nan = tmp_path / "nan.tif"
    write_image(str(nan), np.full((3, 40, 40), np.nan, np.float32))
    assert main(["train", str(tiny_config_file), "--set", f"data.train_images={nan}"]) == 2
    assert "NaN" in capsys.readouterr().err
    assert main(["train", str(tiny_config_file), "--set", f"data.train_images={tmp_path / 'nope.tif'}"]) == 2
    assert "nope.tif" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # bad input fails before anything is written


def test_verbose_shows_the_traceback_of_an_error(tmp_path, capsys):
    from mixscale.cli.main import main

    missing = str(tmp_path / "nope.safetensors")
    assert main(["info", missing]) == 2
    quiet = capsys.readouterr().err
    assert "error:" in quiet and "Traceback" not in quiet
    assert main(["-v", "info", missing]) == 2
    loud = capsys.readouterr().err
    assert "Traceback (most recent call last)" in loud and loud.rstrip().endswith(quiet.strip().splitlines()[-1])


def test_a_type_error_inside_a_command_is_a_bug_not_bad_input(monkeypatch):
    """Only ValueError and OSError mean bad input; a TypeError from the code propagates (exit != 2)."""
    from mixscale import api
    from mixscale.cli.main import main

    def broken(*args, **kwargs):
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr(api, "info", broken)
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["info", "anything.tif"])


def test_importing_the_api_does_not_import_torch():
    """api (and so the CLI's start-up and the napari plugin's) stays light: torch comes with the first model."""
    code = "import sys, mixscale.api; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
