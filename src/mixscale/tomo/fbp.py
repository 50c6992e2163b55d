"""Filtered back-projection, as ``skimage.transform.iradon(..., circle=True)`` computes it.

The filter is built in the spatial domain, as the band-limited ramp of Kak and
Slaney (ch. 3, eq. 61): ``h[0] = 1/4``, ``h[n] = -1 / (pi n)^2`` for odd ``n``,
zero for even ``n``, on ``P`` samples, ``P`` a power of two at least twice the
diagonal of the detector (and at least 64); its Fourier transform times two is the
filter, multiplied by ``sin(w) / w`` for Shepp-Logan. A projection padded with zeros
to ``P`` bins is filtered by FFT; each pixel then takes the filtered value at its
detector position by linear interpolation (pixel-driven back-projection), the sum
over angles is scaled by ``pi / (2 A)``, and pixels outside the reconstruction
circle (radius ``N // 2`` around pixel ``(N // 2, N // 2)``) are zero.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._checks import check_choice, not_allowed
from .geometry import check_angles, check_float_tensor, check_square, radians
from .project import _csr, _hat

#: the filters :func:`fbp` knows
FILTERS = ("ramp", "shepp-logan")
#: nonzeros in one sparse block of the back-projection
BLOCK_NONZEROS = 1 << 22


def _power_of_two_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def fourier_filter(size: int, filter: str, *, device: Any = "cpu") -> torch.Tensor:
    """The filter's response at the ``size // 2 + 1`` frequencies of ``torch.fft.rfft(x, n=size)``.

    Parameters
    ----------
    size : int
        Even FFT length.
    filter : {"ramp", "shepp-logan"}

    Returns
    -------
    response : (size // 2 + 1,) float64 Tensor

    Examples
    --------
    >>> r = fourier_filter(64, "ramp")
    >>> r.shape, round(float(r[0]), 4), round(float(r[-1]), 4)
    (torch.Size([33]), 0.0063, 0.9937)
    """
    n = torch.arange(size, dtype=torch.float64, device=device)
    distance = torch.minimum(n, size - n)  # the kernel is circular and even
    kernel = torch.where(distance % 2 == 1, -1.0 / (math.pi * distance.clamp(min=1)) ** 2, 0.0)
    kernel[0] = 0.25
    response = 2.0 * torch.fft.rfft(kernel).real
    if filter == "shepp-logan":
        omega = math.pi * torch.fft.rfftfreq(size, dtype=torch.float64, device=device)[1:]
        response[1:] *= torch.sin(omega) / omega
    return response


def _detector_span(n_det: int, n: int) -> tuple[int, int]:
    """``(offset, length)`` of the filtered projection kept: detector coordinates ``k - offset``, ``k < length``.

    It reaches one bin beyond both the detector and the reconstruction circle, so that linear
    interpolation never reads past it.
    """
    low = min(-(n_det // 2), -(n // 2)) - 1
    high = max(n_det - 1 - n_det // 2, n // 2) + 1
    return -low, high - low + 1


def filter_sinograms(sinograms: torch.Tensor, filter: str, n: int) -> tuple[torch.Tensor, int]:
    """Filtered projections on the span the back-projection of an ``n x n`` image reads.

    Parameters
    ----------
    sinograms : (B, A, D) Tensor
    filter : {"ramp", "shepp-logan"}
    n : int
        Side of the image to reconstruct.

    Returns
    -------
    filtered : (B, A, L) Tensor
    offset : int
        Bin ``k`` of ``filtered`` lies at ``k - offset`` pixels from the rotation centre.
    """
    d = sinograms.shape[-1]
    offset, length = _detector_span(d, n)
    # iradon's length, so that Shepp-Logan's kernel is the same; longer only if the image is much wider
    diagonal = math.ceil(math.sqrt(2) * d)
    size = max(64, _power_of_two_at_least(2 * diagonal), _power_of_two_at_least(2 * length))
    response = fourier_filter(size, filter, device=sinograms.device).to(sinograms.dtype)
    first = offset - d // 2  # where bin 0 goes; a circular convolution of this length never wraps into the span
    padded = torch.nn.functional.pad(sinograms, (first, 0))
    filtered = torch.fft.irfft(torch.fft.rfft(padded, n=size) * response, n=size)
    return filtered[..., :length], offset


def _inside_circle(n: int, device: torch.device) -> torch.Tensor:
    """Flat indices of the pixels within radius ``n // 2`` of pixel ``(n // 2, n // 2)``."""
    r = torch.arange(n, device=device) - n // 2
    inside = (r[:, None] ** 2 + r[None, :] ** 2) <= (n // 2) ** 2
    return torch.nonzero(inside.flatten()).flatten()


def _interpolation_block(pixels: torch.Tensor, theta: torch.Tensor, n: int, offset: int, length: int,
                         dtype: torch.dtype) -> torch.Tensor:
    """``(P, Ac*L)`` CSR: linear interpolation of each pixel's detector position, for each angle."""
    a = theta.numel()
    row = (pixels // n).to(torch.float64)[:, None, None] - n // 2
    col = (pixels % n).to(torch.float64)[:, None, None] - n // 2
    t = col * torch.cos(theta)[None, :, None] - row * torch.sin(theta)[None, :, None] + offset  # (P, Ac, 1)
    left = t.floor().clamp_(0, length - 2)
    bins = torch.cat((left, left + 1.0), dim=-1)  # (P, Ac, 2)
    values = _hat(t - bins).to(dtype)
    index = torch.arange(a, device=theta.device)[None, :, None] * length + bins.long()
    crow = torch.arange(0, pixels.numel() * 2 * a + 1, 2 * a, device=theta.device)
    return _csr(crow, index.reshape(-1), values.reshape(-1), (pixels.numel(), a * length))


def backproject_filtered(sinograms: torch.Tensor, theta: torch.Tensor, filter: str, n: int) -> torch.Tensor:
    """Filter and back-project (pixel-driven, linear interpolation: iradon's) a block of angles at a time.

    Parameters
    ----------
    sinograms : (B, A, D) Tensor
    theta : (A,) float64 Tensor
        Angles in radians, on ``sinograms``' device.
    filter : {"ramp", "shepp-logan"}
    n : int
        Image side.

    Returns
    -------
    images : (B, n, n) Tensor
        The sum over angles (unscaled); zero outside the reconstruction circle.
    """
    b, a, _ = sinograms.shape
    pixels = _inside_circle(n, sinograms.device)
    inside = sinograms.new_zeros((pixels.numel(), b))
    size = max(1, BLOCK_NONZEROS // (2 * max(1, pixels.numel())))
    for start in range(0, a, size):  # blocks of angles bound the memory of the filtered data and the matrix
        part = slice(start, start + size)
        filtered, offset = filter_sinograms(sinograms[:, part], filter, n)
        block = _interpolation_block(pixels, theta[part], n, offset, filtered.shape[-1], sinograms.dtype)
        inside += block @ filtered.permute(1, 2, 0).reshape(-1, b)  # (Ac*L, B): one sparse-dense product
    out = sinograms.new_zeros((n * n, b))
    out[pixels] = inside
    return out.T.reshape(b, n, n)


def fbp(sinograms: torch.Tensor, angles: Any, *, filter: str = "ramp",
        shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Filtered back-projection of parallel-beam sinograms, batched.

    Reproduces ``skimage.transform.iradon(sinogram.T, angles, filter_name=filter, circle=True,
    output_size=N)`` (to rounding) for each ``(A, n_det)`` sinogram. Only for an image wider than the
    detector's diagonal (``N > sqrt(2) n_det``) do the rims differ: iradon cuts the filtered
    projections off there, this keeps their tails.

    Parameters
    ----------
    sinograms : (..., A, n_det) float32 or float64 Tensor
        Any number of leading batch dimensions.
    angles : (A,) array_like or Tensor
        Projection angles in degrees, one per sinogram row.
    filter : {"ramp", "shepp-logan"}
    shape : (N, N) tuple of int, optional
        Reconstruction shape (square); ``(n_det, n_det)`` by default.

    Returns
    -------
    images : (..., N, N) Tensor
        Same dtype and device as ``sinograms``; zero outside the circle of radius
        ``N // 2`` around pixel ``(N // 2, N // 2)``.

    Examples
    --------
    >>> from mixscale.tomo import parallel_angles, project
    >>> disk = (torch.arange(32.0)[:, None] - 16) ** 2 + (torch.arange(32.0) - 16) ** 2 < 64
    >>> angles = parallel_angles(64)
    >>> recon = fbp(project(disk.double(), angles), angles)
    >>> recon.shape, round(float(recon[16, 16]), 1), abs(float(recon[2, 16])) < 0.05
    (torch.Size([32, 32]), 1.0, True)
    """
    sinograms = check_float_tensor("sinograms", sinograms, min_ndim=2)
    filter = check_choice("filter", filter, FILTERS)
    n_angles, n_det = sinograms.shape[-2:]
    if n_det < 2:
        raise not_allowed("sinograms.shape", tuple(sinograms.shape), "(..., n_angles, n_det) with n_det >= 2")
    n = n_det if shape is None else check_square("shape", shape)
    theta = radians(check_angles(angles, n_angles=n_angles), sinograms.device)
    batch = sinograms.shape[:-2]
    flat = sinograms.reshape(-1, n_angles, n_det)
    if flat.shape[0] == 0:
        return sinograms.new_zeros((*batch, n, n))
    images = backproject_filtered(flat, theta, filter, n) * (math.pi / (2 * n_angles))
    return images.reshape(*batch, n, n)
