"""SIRT: the Simultaneous Iterative Reconstruction Technique, on the operators of :mod:`.project`.

With ``A`` the projector of :func:`~mixscale.tomo.project`, ``R`` the inverse row
sums of ``A`` (one per ray) and ``C`` the inverse column sums (one per pixel), each
iteration is ``x <- clip(x + C A^T R (p - A x), min_value)``. It is gradient descent
on ``||A x - p||_R^2`` with a step that needs no tuning, so that weighted residual
never grows; stopping early regularises, which is why a callback sees every iterate.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from .._checks import check_float, check_int, not_allowed
from .geometry import check_angles, check_float_tensor, check_square
from .project import JosephProjector

logger = logging.getLogger(__name__)

#: a ray (pixel) whose weights sum to no more than this is left out: it carries no information
MIN_SUM = 1e-6


def _inverse_sums(sums: torch.Tensor) -> torch.Tensor:
    return torch.where(sums > MIN_SUM, 1.0 / sums.clamp(min=MIN_SUM), torch.zeros_like(sums))


def _start(x0: Any, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """The first iterate as ``(N*N, B)``: zeros, or ``x0`` checked against the output's shape."""
    b = like.shape[1]
    if x0 is None:
        return like.new_zeros((shape[-1] * shape[-2], b))
    x0 = check_float_tensor("x0", x0, min_ndim=2)
    if tuple(x0.shape) != shape:
        raise not_allowed("x0.shape", tuple(x0.shape), f"{shape}: the reconstruction's shape")
    return x0.detach().to(device=like.device, dtype=like.dtype).reshape(b, -1).T.contiguous()


def _checked_options(iterations: Any, min_value: Any, callback: Any) -> tuple[int, float | None]:
    iterations = check_int("iterations", iterations, minimum=1)
    if min_value is not None:
        min_value = check_float("min_value", min_value)
    if callback is not None and not callable(callback):
        raise not_allowed("callback", callback, "None or a callable callback(iteration, x)", TypeError)
    return iterations, min_value


def sirt(sinograms: torch.Tensor, angles: Any, *, iterations: int, shape: tuple[int, int] | None = None,
         min_value: float | None = 0.0, x0: torch.Tensor | None = None,
         callback: Callable[[int, torch.Tensor], Any] | None = None) -> torch.Tensor:
    """SIRT reconstruction of parallel-beam sinograms, batched.

    Parameters
    ----------
    sinograms : (..., A, n_det) float32 or float64 Tensor
        Any number of leading batch dimensions; ``n_det >= 2``.
    angles : (A,) array_like or Tensor
        Projection angles in degrees, one per sinogram row.
    iterations : int
        Number of iterations, ``>= 1``.
    shape : (N, N) tuple of int, optional
        Reconstruction shape (square); ``(n_det, n_det)`` by default.
    min_value : float or None
        Each iterate is clipped below at this value (0: non-negative attenuation);
        ``None`` does not clip.
    x0 : (..., N, N) Tensor, optional
        First iterate; zeros by default.
    callback : callable, optional
        ``callback(iteration, x)`` after each iteration (``iteration`` from 1, ``x`` the
        ``(..., N, N)`` iterate, not to be modified in place): e.g. to keep the iterate
        that scores best on validation data.

    Returns
    -------
    images : (..., N, N) Tensor
        Same dtype and device as ``sinograms``.

    Examples
    --------
    >>> from mixscale.tomo import parallel_angles, project
    >>> image = torch.zeros(8, 8, dtype=torch.float64)
    >>> image[3:5, 3:5] = 1.0
    >>> angles = parallel_angles(16)
    >>> recon = sirt(project(image, angles), angles, iterations=200)
    >>> bool((recon - image).abs().max() < 0.1)
    True
    """
    sinograms = check_float_tensor("sinograms", sinograms, min_ndim=2)
    iterations, min_value = _checked_options(iterations, min_value, callback)
    n_angles, n_det = sinograms.shape[-2:]
    if n_det < 2:
        raise not_allowed("sinograms.shape", tuple(sinograms.shape), "(..., n_angles, n_det) with n_det >= 2")
    n = n_det if shape is None else check_square("shape", shape)
    theta = check_angles(angles, n_angles=n_angles)
    batch = tuple(sinograms.shape[:-2])
    p = sinograms.reshape(-1, n_angles * n_det).T.contiguous()  # (A*D, B)
    x = _start(x0, (*batch, n, n), p)
    if p.shape[1] == 0:
        return sinograms.new_zeros((*batch, n, n))
    op = JosephProjector(n, n_det, theta, device=p.device, dtype=p.dtype)
    x = _iterate(op, p, x, iterations, min_value, callback, batch)
    return x.T.reshape(*batch, n, n).contiguous()


def _iterate(op: JosephProjector, p: torch.Tensor, x: torch.Tensor, iterations: int, min_value: float | None,
             callback: Callable | None, batch: tuple[int, ...]) -> torch.Tensor:
    """SIRT's loop on ``(N*N, B)`` images and ``(A*D, B)`` sinograms."""
    n = op.n
    row_weights = _inverse_sums(op.forward(p.new_ones((n * n, 1))))
    column_weights = _inverse_sums(op.adjoint(p.new_ones((p.shape[0], 1))))
    logger.debug("SIRT: %d iterations on %d sinograms of %d angles x %d bins", iterations, p.shape[1],
                 op.n_angles, op.n_det)
    for iteration in range(1, iterations + 1):
        residual = p - op.forward(x)
        x = x + column_weights * op.adjoint(row_weights * residual)
        if min_value is not None:
            x = x.clamp(min=min_value)
        if callback is not None:
            callback(iteration, x.T.reshape(*batch, n, n))
    return x
