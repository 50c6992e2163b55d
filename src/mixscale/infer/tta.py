"""Test-time augmentation as a predictor wrapper: predict under symmetries, undo them, average."""

from __future__ import annotations

import itertools

import torch


def _transforms(spatial_dims: int) -> list[tuple[tuple[int, ...], int]]:
    """(flipped axes, quarter turns) pairs: the 8 symmetries of the square in 2D, the 8 axis flips in 3D."""
    if spatial_dims == 2:
        return [(flips, k) for k in range(4) for flips in ((), (3,))]
    return [(tuple(a for a, f in zip((2, 3, 4), bits) if f), 0) for bits in itertools.product((0, 1), repeat=3)]


class TestTimeAugmentation:
    """Average a predictor's outputs over flips and rotations, each mapped back.

    In 2D: the 8 flips/quarter turns (the dihedral group of the square); in 3D:
    the 8 combinations of axis flips (quarter turns would mix a volume's
    anisotropic axes). The predictor must map ``(B, C, *spatial)`` to
    ``(B, C_out, *spatial)`` and accept the transposed shape of a rotated tile.

    Parameters
    ----------
    predictor : callable
    __test__ : bool
        (Keeps pytest from collecting this class.)

    Examples
    --------
    >>> tta = TestTimeAugmentation(lambda x: 2 * x)
    >>> x = torch.randn(1, 1, 5, 7)
    >>> torch.equal(tta(x), 2 * x)
    True
    """

    __test__ = False

    def __init__(self, predictor) -> None:
        if not callable(predictor):
            raise TypeError(f"predictor must be callable, got {type(predictor).__name__}")
        self.predictor = predictor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for y in augmented_outputs(self.predictor, x):
            total = y.double() if total is None else total.add_(y.double())
        return (total / 8).float()  # float64 sums: a prediction every transform agrees on comes back exactly


def augmented_outputs(predictor, x: torch.Tensor):
    """Yield ``predictor``'s output under each of the 8 transforms, mapped back onto ``x``'s grid.

    Each output is one "member" for ensemble statistics (:class:`mixscale.uq.MemberStatistics`);
    :class:`TestTimeAugmentation` averages them.
    """
    if x.ndim not in (4, 5):
        raise ValueError(f"input of shape {tuple(x.shape)} is not allowed; expected (B, C, H, W) or (B, C, D, H, W)")
    for flips, turns in _transforms(x.ndim - 2):
        t = torch.rot90(x.flip(flips) if flips else x, turns, dims=(2, 3))
        y = torch.rot90(predictor(t), -turns, dims=(2, 3))
        yield y.flip(flips) if flips else y
