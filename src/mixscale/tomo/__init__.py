"""Parallel-beam tomography operators in torch: projection, back-projection, FBP and SIRT.

Batched over leading dimensions (many slices at once), on any device, in float32
or float64. Images are ``(..., N, N)``, sinograms ``(..., n_angles, n_det)``, angles
in degrees. The geometry is scikit-image's ``radon(image, theta, circle=True)``:
``project(image, angles)`` approximates ``radon(image, angles, circle=True).T`` and
``fbp(sinogram, angles)`` reproduces ``iradon(sinogram.T, angles, circle=True)``.

- :func:`parallel_angles`, :func:`check_angles`: angles in degrees.
- :func:`project`: forward projection (Joseph's method, a sparse linear map).
- :func:`backproject`: its exact adjoint (transpose).
- :func:`fbp`: filtered back-projection, filters ``"ramp"`` and ``"shepp-logan"``.
- :func:`sirt`: the Simultaneous Iterative Reconstruction Technique.
- :func:`denoise_tv`: total-variation denoising of slices (the baseline after FBP).
"""

from .fbp import FILTERS, fbp
from .geometry import check_angles, parallel_angles
from .project import backproject, project
from .sirt import sirt
from .tv import denoise_tv

__all__ = [
    "FILTERS",
    "backproject",
    "check_angles",
    "denoise_tv",
    "fbp",
    "parallel_angles",
    "project",
    "sirt",
]
