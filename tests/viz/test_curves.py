import numpy as np
import pytest
from PIL import Image

from mixscale.viz import plot_training_curves, read_metrics

# Lightning CSVLogger layout: sorted header, train and val logged on different rows
METRICS_CSV = """\
epoch,step,train_loss_epoch,train_loss_step,val_f1_macro,val_iou,val_loss
0,9,,0.92,,,
0,19,,0.81,,,
0,19,,,0.41,0.30,0.85
0,19,0.86,,,,
1,29,,0.62,,,
1,39,,0.50,,,
1,39,,,0.62,0.52,0.55
1,39,0.56,,,,
2,49,,0.44,,,
2,59,,nan,,,
2,59,,,,0.55,0.60
2,59,0.42,,,,
"""


def _assert_valid_png(path):
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size[0] > 0 and img.size[1] > 0
        pixels = np.asarray(img.convert("RGB"))
    packed = pixels.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
    assert len(np.unique(packed)) > 10, "blank figure"
    return pixels.shape


def test_read_metrics_keeps_gaps_as_nan(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(METRICS_CSV)
    cols = read_metrics(path)
    assert list(cols) == ["epoch", "step", "train_loss_epoch", "train_loss_step",
                          "val_f1_macro", "val_iou", "val_loss"]
    assert all(c.shape == (12,) for c in cols.values())
    np.testing.assert_array_equal(cols["val_loss"][[2, 6, 10]], [0.85, 0.55, 0.60])
    assert np.isnan(cols["val_loss"]).sum() == 9
    assert np.isnan(cols["val_f1_macro"][10])


def test_plot_from_csv_file(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(METRICS_CSV)
    out = plot_training_curves(path, tmp_path / "figs" / "curves.png")
    assert out == tmp_path / "figs" / "curves.png"
    width_two_panels = _assert_valid_png(out)[1]
    # no temporary files left behind
    assert sorted(p.name for p in out.parent.iterdir()) == ["curves.png"]
    # without validation metrics only the loss panel is drawn: a narrower figure
    rows = [{"epoch": e, "train_loss": 1.0 / (e + 1)} for e in range(5)]
    narrow = _assert_valid_png(plot_training_curves(rows, tmp_path / "loss.png"))[1]
    assert narrow < width_two_panels
    # the CSVLogger version folder works as well as the file in it
    _assert_valid_png(plot_training_curves(tmp_path, tmp_path / "from_dir.png"))


def test_missing_columns_nans_and_empty_tables_do_not_crash(tmp_path):
    rows = [{"step": 1, "val_loss": float("nan")}, {"step": 2, "val_acc": "0.5"},
            {"something": "text"}]
    _assert_valid_png(plot_training_curves(rows, tmp_path / "a.png"))
    header_only = tmp_path / "header.csv"
    header_only.write_text("epoch,step,train_loss\n")
    with Image.open(plot_training_curves(header_only, tmp_path / "b.png")) as img:
        assert img.size[0] > 0
    with Image.open(plot_training_curves([], tmp_path / "c.png")) as img:
        assert img.size[0] > 0


def test_bad_arguments_raise_and_write_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"out_path='.*curves\.jpg' is not allowed; expected a path ending in one of"):
        plot_training_curves([{"epoch": 0, "train_loss": 1}], tmp_path / "curves.jpg")
    with pytest.raises(TypeError, match="metrics"):
        plot_training_curves(42, tmp_path / "x.png")
    with pytest.raises(TypeError, match="rows must be mappings"):
        plot_training_curves([[0, 1.0]], tmp_path / "x.png")
    with pytest.raises(FileNotFoundError):
        plot_training_curves(tmp_path / "missing.csv", tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
