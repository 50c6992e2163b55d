"""An autoencoder on single random shapes: reconstruction quality and a latent-space map.

Each 64x64 image holds ONE shape (rectangle, circle, triangle or annulus) of random
size and rotation (rectangles: random aspect ratio; annuli: random hole), near the
centre (jitter of 2 pixels), plus a little noise. A convolutional
autoencoder with a 16-number bottleneck is trained through the library's own
training path (config -> ``mixscale.api.train``, task ``reconstruction``: the
images are their own targets). On held-out images the script reports

- the Pearson correlation of each reconstruction with its input (and with the
  noise-free image), averaged over the images;
- the leave-one-out 5-nearest-neighbour accuracy of the four shape classes in the
  2D embedding of the latent vectors (PCA, or UMAP when ``umap-learn`` is
  installed), and in the full 16-dimensional latent space;

and writes the latent scatter plot, the latent image maps (mean image and nearest
exemplar per cell) and the training curves under ``--out``.

Run::

    .venv/bin/python examples/autoencoder_shapes.py              # about 4 minutes on 2 CPU cores
    .venv/bin/python examples/autoencoder_shapes.py --threads 1  # the same on a machine shared with other jobs
    .venv/bin/python examples/autoencoder_shapes.py --minutes 1 --train 1000
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from mixscale import api
from mixscale.data import Normalization, denormalize, normalize, write_image
from mixscale.metrics import knn_accuracy, pearson
from mixscale.model import load_model
from mixscale.synthetic import SHAPE_CLASSES, draw_shape
from mixscale.viz import embed_2d, plot_latent_image_map, plot_latent_scatter, plot_training_curves

logger = logging.getLogger("autoencoder_shapes")


def make_shapes(n: int, *, size: int = 64, noise: float = 0.05, jitter: float = 2.0, seed: int = 0):
    """``n`` images with one random shape each: (noisy images, clean images, class labels 1..4)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(1, len(SHAPE_CLASSES), size=n)
    clean = np.zeros((n, size, size), np.float32)
    for i, label in enumerate(labels):
        extent = rng.uniform(0.25, 0.6) * size  # long side / outer diameter: 16 to 38 pixels
        centre = (size - 1) / 2 + rng.uniform(-jitter, jitter, size=2)
        mask = draw_shape(SHAPE_CLASSES[label], centre, extent, angle=rng.uniform(0, 2 * np.pi),
                          image_shape=(size, size), aspect=rng.uniform(0.5, 1.0),
                          inner_fraction=rng.uniform(0.4, 0.7))
        clean[i][mask] = 1.0
    noisy = clean + rng.normal(0, noise, size=clean.shape).astype(np.float32)
    return noisy, clean, labels


def train(out: Path, train_path: str, val_path: str, args) -> tuple[Path, int]:
    budget = time.strftime("00:%H:%M:%S", time.gmtime(args.minutes * 60))
    cfg = {
        "version": 1, "task": "reconstruction", "run_dir": str(out / "run"), "seed": 0,
        "data": {"train_images": train_path, "val_images": val_path, "patch_shape": [64, 64],
                 "samples_per_epoch": args.train, "val_samples": 200, "batch_size": 16},
        "net": {"name": "autoencoder", "depth": 3, "base_channels": args.channels, "latent_dim": args.latent},
        "optim": {"name": "adam", "lr": 2e-3},
        "trainer": {"max_epochs": args.epochs, "max_time": budget, "progress_bar": False},
    }
    result = api.train(cfg)
    with open(result.metrics_csv, newline="") as f:
        epochs = sum(1 for row in csv.DictReader(f) if row.get("val_loss"))  # validated epochs
    logger.info("%d epochs validated, best val_loss %.4f", epochs, result.best_val_loss)
    plot_training_curves(result.metrics_csv, out / "curves.png")
    return result.model_path, epochs


@torch.no_grad()
def encode_and_reconstruct(model_path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latent vectors (N, latent_dim) and reconstructions (N, H, W) in the images' units."""
    net, info = load_model(model_path)
    norm, target_norm = (Normalization.from_dict(d) for d in (info.normalization, info.target_normalization))
    x = torch.from_numpy(normalize(images[:, None], norm, channel_axis=1).astype(np.float32))
    latents, recon = [], []
    for batch in torch.split(x, 100):
        z = net.encode(batch)
        latents.append(z.numpy())
        recon.append(net.decode(z).numpy())
    recon = denormalize(np.concatenate(recon), target_norm, channel_axis=1)[:, 0]
    return np.concatenate(latents), recon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/autoencoder_shapes"))
    parser.add_argument("--minutes", type=float, default=3.5, help="training time budget")
    parser.add_argument("--epochs", type=int, default=100, help="at most this many epochs")
    parser.add_argument("--train", type=int, default=2000, help="training images")
    parser.add_argument("--channels", type=int, default=8, help="base channels of the autoencoder")
    parser.add_argument("--latent", type=int, default=16, help="latent dimension")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 is much faster on a busy machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    if (args.out / "run").exists():
        shutil.rmtree(args.out / "run")
    args.out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n, seed in (("train", args.train, 0), ("val", 200, 1)):
        paths[split] = str(args.out / f"{split}.npy")
        write_image(paths[split], make_shapes(n, seed=seed)[0], overwrite=True)
    test, test_clean, test_labels = make_shapes(500, seed=2)
    model_path, epochs = train(args.out, paths["train"], paths["val"], args)
    latents, recon = encode_and_reconstruct(model_path, test)
    r_input = [pearson(r, t) for r, t in zip(recon, test)]
    r_clean = [pearson(r, t) for r, t in zip(recon, test_clean)]
    embedding, method = embed_2d(latents, method="auto", seed=0)
    names = list(SHAPE_CLASSES)
    plot_latent_scatter(embedding, test_labels, args.out / "latent_scatter.png", class_names=names, method=method,
                        title=f"Held-out shapes, latent space ({method.upper()})")
    for mode in ("mean", "nearest"):
        plot_latent_image_map(embedding, test, args.out / f"latent_map_{mode}.png", bins=12, mode=mode)
    report = {
        "test_images": len(test), "epochs": epochs, "embedding": method, "latent_dim": args.latent,
        "pearson_vs_input_mean": float(np.mean(r_input)), "pearson_vs_input_min": float(np.min(r_input)),
        "pearson_vs_clean_mean": float(np.mean(r_clean)),
        "knn5_accuracy_2d": knn_accuracy(embedding, test_labels, k=5),
        "knn5_accuracy_latent": knn_accuracy(latents, test_labels, k=5),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"figures: {', '.join(str(p) for p in sorted(args.out.glob('*.png')))}")


if __name__ == "__main__":
    main()
