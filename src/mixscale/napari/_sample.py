"""Sample data for File > Open Sample > mixscale: made on the fly, with the ground truth as a hidden layer."""

from __future__ import annotations

from ..recipes.samples import sample


def _layers(name: str) -> list:
    image, truth = sample(name)
    return [(image, {"name": name}, "image"),
            (truth, {"name": "ground truth", "visible": False, "opacity": 0.5}, "labels")]


def shapes() -> list:
    """A 256x256 image of random shapes in noise (classes: 1 background, 2 shapes)."""
    return _layers("shapes")


def shapes_volume() -> list:
    """A 16x256x256 stack of such images."""
    return _layers("shapes_volume")
