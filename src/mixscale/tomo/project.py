"""Parallel-beam forward projection (Joseph's method) and its exact adjoint.

The geometry is scikit-image's ``radon(image, theta, circle=True)`` for a square
``N x N`` image: the rotation centre is pixel ``(N // 2, N // 2)``, detector bin
``j`` lies at ``j - n_det // 2`` pixels from the centre, and pixel ``(r, c)`` projects
at angle ``theta`` onto ``t = (c - N // 2) cos(theta) - (r - N // 2) sin(theta)``.

Joseph's method: a ray steps through the image one row at a time (or one column,
when it runs closer to the horizontal), interpolates linearly between the two pixels
it passes between, and weighs each sample by the ray's length per step,
``1 / max(|cos|, |sin|)``. The operator is a sparse matrix with exactly two entries
per ray and step, built in blocks of angles; the adjoint is built from the same
formula read the other way (two entries per pixel and angle), so it is the transpose
up to rounding. Rays that run closer to the vertical are computed on the transposed
image, which keeps every block's rows sorted.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from .._checks import check_int, not_allowed
from .geometry import check_angles, check_float_tensor, check_square, radians

logger = logging.getLogger(__name__)

#: nonzeros in one sparse block (about 64 MB in float64): bounds the memory one block takes
BLOCK_NONZEROS = 1 << 22
#: an operator keeps its blocks for reuse (SIRT's iterations) when all of them fit in this many bytes
KEEP_BYTES = 512 * 2**20


@dataclass(frozen=True)
class _Chunk:
    """Some angles of one kind: lines are image rows (``transposed=False``) or image columns."""

    rows: torch.Tensor  # (Ac,) the angles' indices in the sinogram
    slope: torch.Tensor  # (Ac,) float64: how far the ray moves along a line per line stepped
    scale: torch.Tensor  # (Ac,) float64: how far it moves along a line per detector bin
    transposed: bool


def _positions(step: torch.Tensor, u: torch.Tensor, slope: torch.Tensor, scale: torch.Tensor,
               centre: float) -> torch.Tensor:
    """Where the ray of detector offset ``u`` crosses line ``step``, as a pixel index along the line.

    Both directions of the operator call this with the same numbers, so they agree to the last bit.
    """
    return centre + (step - centre) * slope + u * scale


def _hat(distance: torch.Tensor) -> torch.Tensor:
    """Linear interpolation weight of a pixel ``distance`` away from the sample."""
    return (1.0 - distance.abs()).clamp_(min=0.0)


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # torch notes once per process that sparse CSR is a beta feature
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


def _transposed(images: torch.Tensor, n: int) -> torch.Tensor:
    """``(N*N, B)`` images with rows and columns swapped (the same call swaps them back)."""
    return images.view(n, n, -1).transpose(0, 1).reshape(n * n, -1)


class JosephProjector:
    """The linear map of :func:`project` and its transpose, for one geometry.

    Images are handled as ``(N*N, B)`` matrices (pixels row-major, batch last) and
    sinograms as ``(A*n_det, B)``, so that each block is one sparse-dense product.

    Parameters
    ----------
    n : int
        Image side ``N >= 2``.
    n_det : int
        Detector bins, ``>= 2``.
    angles : (A,) float64 Tensor
        Checked angles in degrees (:func:`~mixscale.tomo.geometry.check_angles`).
    device, dtype
        Where and in what precision the operator computes.
    keep : bool, optional
        Keep the blocks once built (for repeated use); by default when they fit in
        :data:`KEEP_BYTES`. Otherwise each application rebuilds them, block by block.
    """

    def __init__(self, n: int, n_det: int, angles: torch.Tensor, *, device: torch.device,
                 dtype: torch.dtype, keep: bool | None = None):
        self.n, self.n_det, self.n_angles = n, n_det, int(angles.numel())
        self.device, self.dtype = torch.device(device), dtype
        self.chunks = self._split(radians(angles, self.device))
        per_entry = 8 + torch.empty((), dtype=dtype).element_size()
        nbytes = 2 * self.n_angles * 2 * n * max(n, n_det) * per_entry  # both directions
        self.keep = nbytes <= KEEP_BYTES if keep is None else keep
        if keep is None and not self.keep:
            logger.info("projector for %d^2 pixels x %d angles x %d bins needs %.0f MB > %.0f MB: "
                        "rebuilding its blocks at every use", n, self.n_angles, n_det, nbytes / 2**20,
                        KEEP_BYTES / 2**20)
        self._blocks: dict[tuple[str, int], torch.Tensor] = {}

    def _split(self, theta: torch.Tensor) -> list[_Chunk]:
        cos, sin = torch.cos(theta), torch.sin(theta)
        flat = cos.abs() >= sin.abs()  # the ray crosses every row once: step over rows
        size = max(1, BLOCK_NONZEROS // (2 * self.n * max(self.n, self.n_det)))
        chunks = []
        for transposed, mask in ((False, flat), (True, ~flat)):
            rows = torch.nonzero(mask).flatten()
            c, s = cos[rows], sin[rows]
            slope, scale = (c / s, -1.0 / s) if transposed else (s / c, 1.0 / c)
            for start in range(0, rows.numel(), size):
                part = slice(start, start + size)
                chunks.append(_Chunk(rows[part], slope[part], scale[part], transposed))
        return chunks

    def _arange(self, n: int) -> torch.Tensor:
        return torch.arange(n, dtype=torch.float64, device=self.device)

    def _ray_block(self, chunk: _Chunk) -> torch.Tensor:
        """``(Ac*n_det, N*N)`` CSR: each ray's two pixels on every line it crosses."""
        n, d, a = self.n, self.n_det, chunk.rows.numel()
        step = self._arange(n)[None, None, :, None]
        u = (self._arange(d) - d // 2)[None, :, None, None]
        slope, scale = chunk.slope[:, None, None, None], chunk.scale[:, None, None, None]
        p = _positions(step, u, slope, scale, n // 2)  # (Ac, D, N, 1)
        left = p.floor().clamp_(0, n - 2)
        cols = torch.cat((left, left + 1.0), dim=-1)  # (Ac, D, N, 2)
        values = (_hat(p - cols) * scale.abs()).to(self.dtype)
        index = (step * n + cols).long()
        crow = torch.arange(0, a * d * 2 * n + 1, 2 * n, device=self.device)
        return _csr(crow, index.reshape(-1), values.reshape(-1), (a * d, n * n))

    def _pixel_block(self, chunk: _Chunk) -> torch.Tensor:
        """``(N*N, Ac*n_det)`` CSR, the transpose of :meth:`_ray_block`: each pixel's two rays per angle."""
        n, d, a = self.n, self.n_det, chunk.rows.numel()
        step = self._arange(n)[None, :, None, None]  # the line (row of the possibly transposed image)
        col = self._arange(n)[None, None, :, None]  # the pixel along it
        slope, scale = chunk.slope[:, None, None, None], chunk.scale[:, None, None, None]
        hit = d // 2 + (col - n // 2 - (step - n // 2) * slope) / scale  # the (fractional) ray through it
        first = hit.floor().clamp_(0, d - 2)
        bins = torch.cat((first, first + 1.0), dim=-1)  # (Ac, N, N, 2): the two rays that may reach it
        p = _positions(step, bins - d // 2, slope, scale, n // 2)
        values = (_hat(p - col) * scale.abs()).to(self.dtype)
        index = (torch.arange(a, device=self.device)[:, None, None, None] * d + bins.long())
        crow = torch.arange(0, n * n * 2 * a + 1, 2 * a, device=self.device)
        return _csr(crow, index.permute(1, 2, 0, 3).reshape(-1), values.permute(1, 2, 0, 3).reshape(-1),
                    (n * n, a * d))

    def _block(self, kind: str, k: int) -> torch.Tensor:
        key = (kind, k)
        block = self._blocks.get(key)
        if block is None:
            build = self._ray_block if kind == "ray" else self._pixel_block
            block = build(self.chunks[k])
            if self.keep:
                self._blocks[key] = block
        return block

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N*N, B)`` images to ``(A*n_det, B)`` sinograms."""
        n, d = self.n, self.n_det
        out = images.new_empty((self.n_angles, d, images.shape[1]))
        swapped = None
        for k, chunk in enumerate(self.chunks):
            if chunk.transposed and swapped is None:
                swapped = _transposed(images, n)
            source = swapped if chunk.transposed else images
            out[chunk.rows] = (self._block("ray", k) @ source).view(chunk.rows.numel(), d, -1)
        return out.view(self.n_angles * d, -1)

    def adjoint(self, sinograms: torch.Tensor) -> torch.Tensor:
        """``(A*n_det, B)`` sinograms to ``(N*N, B)`` images: the transpose of :meth:`forward`."""
        n, d = self.n, self.n_det
        rows = sinograms.view(self.n_angles, d, -1)
        parts = {False: None, True: None}
        for k, chunk in enumerate(self.chunks):
            part = self._block("pixel", k) @ rows[chunk.rows].reshape(chunk.rows.numel() * d, -1)
            previous = parts[chunk.transposed]
            parts[chunk.transposed] = part if previous is None else previous.add_(part)
        out = parts[False] if parts[False] is not None else sinograms.new_zeros((n * n, sinograms.shape[1]))
        if parts[True] is not None:
            out = out + _transposed(parts[True], n)
        return out


def _image_side(images: torch.Tensor) -> int:
    if images.shape[-1] != images.shape[-2] or images.shape[-1] < 2:
        raise not_allowed("images.shape", tuple(images.shape), "(..., N, N): square images with N >= 2")
    return int(images.shape[-1])


def _n_det(value: Any, n: int) -> int:
    return n if value is None else check_int("n_det", value, minimum=2)


def project(images: torch.Tensor, angles: Any, n_det: int | None = None) -> torch.Tensor:
    """Forward projection (the Radon transform) of square images, batched.

    Parameters
    ----------
    images : (..., N, N) float32 or float64 Tensor
        Any number of leading batch dimensions; ``N >= 2``.
    angles : (A,) array_like or Tensor
        Projection angles in degrees (as ``skimage.transform.radon``'s ``theta``).
    n_det : int, optional
        Detector bins of width one pixel, centred on the image centre; ``N`` by default.

    Returns
    -------
    sinograms : (..., A, n_det) Tensor
        Same dtype and device as ``images``; close to
        ``skimage.transform.radon(image, angles, circle=True).T`` for an image that is
        zero outside its inscribed circle (the discretisations differ: scikit-image
        rotates the image and sums its columns). Differentiable in ``images``: the gradient
        is :func:`backproject`.

    Examples
    --------
    >>> image = torch.zeros(5, 5, dtype=torch.float64)
    >>> image[2, 2] = 1.0
    >>> project(image, [0, 90])
    tensor([[0., 0., 1., 0., 0.],
            [0., 0., 1., 0., 0.]], dtype=torch.float64)
    """
    images = check_float_tensor("images", images, min_ndim=2)
    n = _image_side(images)
    n_det = _n_det(n_det, n)
    theta = check_angles(angles)
    batch = images.shape[:-2]
    flat = images.reshape(-1, n * n).T.contiguous()
    if flat.shape[1] == 0:
        return images.new_zeros((*batch, theta.numel(), n_det))
    op = JosephProjector(n, n_det, theta, device=images.device, dtype=images.dtype, keep=False)
    return op.forward(flat).T.reshape(*batch, theta.numel(), n_det)


def backproject(sinograms: torch.Tensor, angles: Any, shape: tuple[int, int]) -> torch.Tensor:
    """Back-projection: the exact adjoint (transpose) of :func:`project`, batched.

    ``(project(x, angles) * y).sum() == (x * backproject(y, angles, x.shape[-2:])).sum()``
    up to rounding. This is not a reconstruction; see :func:`~mixscale.tomo.fbp` and
    :func:`~mixscale.tomo.sirt`.

    Parameters
    ----------
    sinograms : (..., A, n_det) float32 or float64 Tensor
        ``n_det >= 2``.
    angles : (A,) array_like or Tensor
        Projection angles in degrees, one per sinogram row.
    shape : (N, N) tuple of int
        The image shape (square, ``N >= 2``).

    Returns
    -------
    images : (..., N, N) Tensor
        Same dtype and device as ``sinograms``.

    Examples
    --------
    >>> sinogram = torch.zeros(2, 5, dtype=torch.float64)
    >>> sinogram[:, 2] = 1.0
    >>> backproject(sinogram, [0, 90], (5, 5))[2].round(decimals=6)
    tensor([1., 1., 2., 1., 1.], dtype=torch.float64)
    """
    sinograms = check_float_tensor("sinograms", sinograms, min_ndim=2)
    n = check_square("shape", shape)
    n_angles, n_det = sinograms.shape[-2:]
    if n_det < 2:
        raise not_allowed("sinograms.shape", tuple(sinograms.shape), "(..., n_angles, n_det) with n_det >= 2")
    theta = check_angles(angles, n_angles=n_angles)
    batch = sinograms.shape[:-2]
    flat = sinograms.reshape(-1, n_angles * n_det).T.contiguous()
    if flat.shape[1] == 0:
        return sinograms.new_zeros((*batch, n, n))
    op = JosephProjector(n, n_det, theta, device=sinograms.device, dtype=sinograms.dtype, keep=False)
    return op.adjoint(flat).T.reshape(*batch, n, n)
