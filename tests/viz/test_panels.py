import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mixscale.viz import (IGNORE_COLOR, class_colors, label_to_rgba, plot_confusion_matrix,
                          plot_prediction_panel)


def _png(path):
    with Image.open(path) as img:
        assert img.format == "PNG"
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.size > 0
    packed = pixels.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
    assert len(np.unique(packed)) > 10, "blank figure"
    return pixels


@pytest.fixture
def sample():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(24, 30)).astype(np.float32)
    target = (image > 0).astype(np.int64) + (image > 1)
    target[:5] = -1
    return image, target, np.roll(target, 3, axis=1).clip(0)


def test_class_colors_fixed_and_distinct():
    many = class_colors(40)
    assert many.shape == (40, 3) and many.min() >= 0 and many.max() <= 1
    np.testing.assert_array_equal(class_colors(5), many[:5])
    dist = np.linalg.norm(many[:, None] - many[None], axis=-1)
    assert dist[~np.eye(40, dtype=bool)].min() > 0.02
    assert np.linalg.norm(many - np.array(IGNORE_COLOR), axis=1).min() > 0.05
    with pytest.raises(ValueError, match="num_classes=0 is not allowed; expected an integer >= 1"):
        class_colors(0)


def test_label_to_rgba_colours_and_transparency():
    labels = np.array([[0, 1, -1], [2, 2, 1]])
    rgba = label_to_rgba(labels, num_classes=4)
    assert rgba.shape == (2, 3, 4)
    np.testing.assert_array_equal(rgba[..., 3], [[1, 1, 0], [1, 1, 1]])
    np.testing.assert_allclose(rgba[1, 0, :3], class_colors(4)[2])
    np.testing.assert_array_equal(rgba[0, 1], rgba[1, 2])
    with pytest.raises(ValueError, match="labels must hold classes 0..3"):
        label_to_rgba(np.array([[4]]), num_classes=4)
    with pytest.raises(TypeError, match="integer"):
        label_to_rgba(np.zeros((2, 2)))


def test_segmentation_panel_single_and_several_samples(tmp_path, sample):
    image, target, pred = sample
    one = _png(plot_prediction_panel(image, target, pred, tmp_path / "one.png",
                                     class_names=["bg", "a", "b"]))
    imgs = [image, image[:, :20], image]
    tgts = [target, target[:, :20], target]
    prds = [pred, pred[:, :20], pred]
    three = _png(plot_prediction_panel(imgs, tgts, prds, tmp_path / "three.png",
                                       num_classes=5))
    assert three.shape[0] > 2 * one.shape[0]
    # the light grey of ignored pixels is visible in the truth column
    grey = np.round(np.array(IGNORE_COLOR) * 255)
    assert (np.abs(three.astype(int) - grey).max(-1) <= 1).sum() > 100
    stack = _png(plot_prediction_panel(np.stack(imgs[::2]), np.stack(tgts[::2]),
                                       np.stack(prds[::2]), tmp_path / "stack.png"))
    assert stack.shape[0] > one.shape[0]


def test_regression_panel(tmp_path, sample):
    image = sample[0]
    _png(plot_prediction_panel(image, image * 2.0, image * 1.5, tmp_path / "reg.png",
                               titles=("noisy", "clean", "denoised")))


def test_mismatches_raise_and_write_nothing(tmp_path, sample):
    image, target, pred = sample
    out = tmp_path / "p.png"
    with pytest.raises(ValueError, match="sample 1 has shapes"):
        plot_prediction_panel([image, image], [target, target[:4]], [pred, pred], out)
    with pytest.raises(ValueError, match="as many samples"):
        plot_prediction_panel([image, image], [target], [pred], out)
    with pytest.raises(TypeError, match="must both be integer"):
        plot_prediction_panel(image, target, pred.astype(float), out)
    with pytest.raises(ValueError, match="pred must hold classes 0..1"):
        plot_prediction_panel(image, target.clip(0, 1), pred, out, num_classes=2)
    with pytest.raises(ValueError, match="class_names"):
        plot_prediction_panel(image, target, pred, out, num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="titles"):
        plot_prediction_panel(image, target, pred, out, titles="abc")
    with pytest.raises(ValueError, match="2D array"):
        plot_prediction_panel(image[None, None], target, pred, out)
    assert not any(tmp_path.iterdir())


def test_confusion_matrix(tmp_path):
    cm = np.array([[50, 3, 0], [4, 20, 1], [0, 0, 0]])
    _png(plot_confusion_matrix(cm, tmp_path / "cm.png", class_names=["bg", "a", "b"]))
    _png(plot_confusion_matrix(cm / 7.0, tmp_path / "cm_raw.png", normalize=False,
                               title="fractions"))
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(np.ones((2, 3)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="non-negative"):
        plot_confusion_matrix([[1, -1], [0, 2]], tmp_path / "x.png")
    with pytest.raises(ValueError, match="class_names"):
        plot_confusion_matrix(cm, tmp_path / "x.png", class_names=["a"])
    assert not (tmp_path / "x.png").exists()


def test_plots_from_several_threads(tmp_path, sample):
    image, target, pred = sample

    def draw(k):
        return plot_prediction_panel(image, target, pred, tmp_path / f"t{k}.png")

    with ThreadPoolExecutor(3) as pool:
        paths = list(pool.map(draw, range(3)))
    first = _png(paths[0])
    for path in paths[1:]:
        np.testing.assert_array_equal(_png(path), first)


def test_viz_never_uses_pyplot_global_state():
    import mixscale.viz

    uses = re.compile(r"matplotlib\.pyplot|from\s+matplotlib\s+import\s+.*pyplot|plt\.")
    sources = Path(mixscale.viz.__file__).parent.glob("*.py")
    assert not [p.name for p in sources if uses.search(p.read_text())]
