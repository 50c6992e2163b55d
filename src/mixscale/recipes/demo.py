"""The end-to-end demo: synthetic shapes -> train a 2D MS-D -> predict -> evaluate -> figures.

Everything goes through the public API and real files, exactly as a user would
run it; ``mixscale demo`` and ``make demo`` call :func:`run_demo`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DEMO_EPOCHS = 60


def make_demo_data(data_dir: Path, *, seed: int = 0) -> dict[str, str]:
    """Write train/validation/test stacks of random shapes as multi-page TIFFs; return their paths."""
    from ..data import write_image
    from ..synthetic import random_shapes

    data_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    rng = np.random.default_rng(seed)
    for i, (split, n) in enumerate([("train", 12), ("val", 4), ("test", 8)]):
        images, labels = random_shapes(n, image_shape=(128, 128), noise_std=0.0, seed=seed + i)
        # a class-dependent brightness lets a short CPU run converge; pixel noise stronger than the
        # brightness steps means a pixel's class still needs its neighbourhood
        images = images * (0.4 + 0.3 * labels) + rng.normal(0.0, 0.35, size=images.shape)
        for kind, array in (("images", images.astype(np.float32)), ("labels", labels.astype(np.uint8))):
            paths[f"{split}_{kind}"] = str(data_dir / f"{split}_{kind}.tif")
            write_image(paths[f"{split}_{kind}"], array)
    return paths


def demo_config(paths: dict[str, str], run_dir: Path, *, epochs: int, seed: int) -> dict:
    """The training config of the demo, as a user would write it in YAML."""
    from ..synthetic import SHAPE_CLASSES

    return {
        "version": 1, "task": "segmentation", "run_dir": str(run_dir), "seed": seed,
        "data": {"train_images": paths["train_images"], "train_labels": paths["train_labels"],
                 "val_images": paths["val_images"], "val_labels": paths["val_labels"],
                 "num_classes": len(SHAPE_CLASSES), "class_names": list(SHAPE_CLASSES), "spatial_dims": 2,
                 "patch_shape": [64, 64], "samples_per_epoch": 96, "val_samples": 32, "batch_size": 8},
        "net": {"name": "msd", "depth": 30, "width": 1},
        "loss": {"ce": 1.0, "dice": 1.0},
        "optim": {"name": "adam", "lr": 5e-3},
        "schedule": {"name": "cosine"},
        "trainer": {"max_epochs": epochs},
    }


def run_demo(out: str | Path, *, epochs: int | None = None, seed: int = 0) -> dict:
    """Run the whole demo into ``out`` (which must not exist or be empty).

    Returns
    -------
    dict with the paths written and the headline metrics (held-out macro F1 of the
    model and of the trivial majority-class baseline).
    """
    import yaml

    from .. import api
    from ..data import atomic_path, read_image
    from ..synthetic import SHAPE_CLASSES

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"demo output {out} exists and is not empty; choose another --out")
    paths = make_demo_data(out / "data", seed=seed)
    cfg = demo_config(paths, out / "run", epochs=epochs or DEMO_EPOCHS, seed=seed)
    with atomic_path(out / "demo.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    result = api.train(cfg)
    pred_dir = result.run_dir / "predictions"
    pred_dir.mkdir(exist_ok=True)
    pred = api.predict(result.model_path, paths["test_images"], pred_dir / "test_labels.tif", slice_axis=0,
                       batch_size=4)
    target = api.evaluate(pred, paths["test_labels"], num_classes=len(SHAPE_CLASSES), class_names=SHAPE_CLASSES,
                          out=result.run_dir / "metrics.json")
    api.write_metrics(target, result.run_dir / "metrics.csv")
    truth = np.asarray(read_image(paths["test_labels"])).astype(np.int64)
    majority = int(np.bincount(truth.ravel()).argmax())
    baseline = api.evaluate(np.full_like(truth, majority), truth, num_classes=len(SHAPE_CLASSES))
    figures = _demo_figures(result, paths, pred)
    summary = {
        "run_dir": str(result.run_dir), "model": str(result.model_path), "predictions": str(pred_dir),
        "metrics": str(result.run_dir / "metrics.json"), "figures": [str(f) for f in figures],
        "f1_macro": target["f1_macro"], "accuracy": target["accuracy"], "ari": target["ari"],
        "baseline_f1_macro": baseline["f1_macro"], "baseline_accuracy": baseline["accuracy"],
        "epochs": result.epochs,
    }
    api.write_metrics({k: v for k, v in summary.items() if isinstance(v, float)}, out / "summary.json")
    return summary


def _demo_figures(result, paths: dict[str, str], pred: np.ndarray) -> list[Path]:
    """Training curves and input / truth / prediction panels for three test images."""
    from ..data import read_image
    from ..synthetic import SHAPE_CLASSES
    from ..viz import plot_prediction_panel, plot_training_curves

    fig_dir = result.run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    images, labels = read_image(paths["test_images"]), read_image(paths["test_labels"])
    curves = plot_training_curves(result.metrics_csv, fig_dir / "training_curves.png")
    panel = plot_prediction_panel([images[i] for i in range(3)], [labels[i] for i in range(3)],
                                  [pred[i] for i in range(3)], fig_dir / "test_predictions.png",
                                  num_classes=len(SHAPE_CLASSES), class_names=list(SHAPE_CLASSES))
    return [curves, panel]
