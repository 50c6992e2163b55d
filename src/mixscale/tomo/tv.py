"""Total-variation denoising (Rudin-Osher-Fatemi) by Chambolle's dual projection algorithm, in torch.

The baseline a tomographer reaches for after FBP: ``u = argmin ||u - f||^2 / 2 + weight * TV(u)``
with the isotropic TV of each 2D slice, solved on the dual variable ``p`` (A. Chambolle, "An algorithm
for total variation minimization and applications", J. Math. Imaging Vis. 20, 2004):
``u = f - weight * div p``; ``p <- (p + tau * grad g) / (1 + tau * |grad g|)`` with
``g = div p - f / weight`` and step ``tau = 1/4``. Batched over leading axes, any device; the same model
as scikit-image's ``denoise_tv_chambolle`` (``tests/tomo`` compares the two).
"""

from __future__ import annotations

import torch

from .._checks import check_float, check_int

__all__ = ["denoise_tv"]


def _grad(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along the last two axes (zero at the far edge)."""
    gy, gx = torch.zeros_like(u), torch.zeros_like(u)
    gy[..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
    gx[..., :, :-1] = u[..., :, 1:] - u[..., :, :-1]
    return gy, gx


def _div(py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """The negative adjoint of :func:`_grad`: ``<grad u, p> = -<u, div p>``."""
    d = torch.zeros_like(py)
    d[..., :-1, :] += py[..., :-1, :]
    d[..., 1:, :] -= py[..., :-1, :]
    d[..., :, :-1] += px[..., :, :-1]
    d[..., :, 1:] -= px[..., :, :-1]
    return d


def denoise_tv(images: torch.Tensor, weight: float, *, iterations: int = 200, tol: float = 2e-4) -> torch.Tensor:
    """Total-variation denoising of each 2D slice.

    Parameters
    ----------
    images : (..., H, W) Tensor
        Floating point; leading axes are a batch.
    weight : float
        The regularisation weight (> 0): larger is smoother, in the units of the image values.
    iterations : int
        At most this many dual steps.
    tol : float
        Stop when the largest change of ``u`` in a step is below ``tol * weight``.

    Returns
    -------
    (..., H, W) Tensor
        The denoised slices, same dtype and device.

    Examples
    --------
    >>> f = torch.zeros(1, 8, 8); f[0, 2:6, 2:6] = 1.0
    >>> u = denoise_tv(f, 0.1)
    >>> bool(u[0, 3, 3] < 1.0 and u[0, 0, 0] > 0.0)  # an edge shrinks towards the mean, no new ones appear
    True
    """
    weight = check_float("weight", weight, minimum=0.0, open_minimum=True)
    iterations = check_int("iterations", iterations, minimum=1)
    if images.ndim < 2 or not images.is_floating_point():
        raise ValueError(f"images of shape {tuple(images.shape)} and dtype {images.dtype} are not allowed; "
                         "expected floating point (..., H, W)")
    f = images
    py, px = torch.zeros_like(f), torch.zeros_like(f)
    u = f
    tau = 0.25  # Chambolle proves 1/8; 1/4 converges in practice, twice as fast (as scikit-image uses)
    for _ in range(iterations):
        gy, gx = _grad(_div(py, px) - f / weight)
        norm = 1 + tau * torch.sqrt(gy * gy + gx * gx)
        py, px = (py + tau * gy) / norm, (px + tau * gx) / norm
        new = f - weight * _div(py, px)
        change = float((new - u).abs().max())
        u = new
        if change < tol * weight:
            break
    return u
