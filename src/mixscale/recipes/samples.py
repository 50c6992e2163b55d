"""Sample images made on the fly (no downloads), with their ground truth: the napari plugin's sample data.

Labels follow the scribble convention (0 = unlabelled, classes 1..K), the numbering a person paints with.
"""

from __future__ import annotations

import numpy as np

SAMPLES = ("shapes", "shapes_volume")


def sample(name: str, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic image (or volume) and its ground truth.

    Parameters
    ----------
    name : {"shapes", "shapes_volume"}
        ``shapes``: one 256x256 image of random shapes (circles, rectangles, triangles, annuli) in
        noise, overlapping (about 43 % of the pixels); class 1 is the background, class 2 the shapes. ``shapes_volume``: 16x256x256 slices
        of such images, each slice its own draw.
    seed : int

    Returns
    -------
    image : (256, 256) or (16, 256, 256) ndarray of float32
    truth : ndarray of uint8, the same shape
        Classes 1 (background) and 2 (shapes); no 0.

    Examples
    --------
    >>> image, truth = sample("shapes")
    >>> image.shape, sorted(np.unique(truth).tolist())
    ((256, 256), [1, 2])
    """
    from ..synthetic import random_shapes

    if name not in SAMPLES:
        raise ValueError(f"name={name!r} is not a sample; expected one of {list(SAMPLES)}")
    count = 1 if name == "shapes" else 16
    # crowded, overlapping shapes: about 43 % of the pixels, so a classifier must learn both classes
    images, labels = random_shapes(count, image_shape=(256, 256), n_shapes=(40, 60), size_range=(20, 50),
                                   noise_std=0.25, overlap=True, seed=seed)
    truth = (labels > 0).astype(np.uint8) + 1
    return (images[0], truth[0]) if count == 1 else (images, truth)
