"""Synthetic images with known labels, reproducible from a seed.

- :func:`random_shapes`: rectangles, circles, triangles and annuli (2D).
- :func:`mixed_scale_shapes`: disks and squares whose class needs fine texture and
  large-scale size and shape together.
- :func:`random_shapes_3d`: boxes, spheres and shells in volumes.
- :func:`draw_shape`, :func:`draw_shape_3d`: one analytically rasterised shape.
- :func:`foam_phantom`, :func:`foam_slices`, :func:`foam_sinograms`: foam phantoms (a cylinder
  minus spherical voids) with exact slices and analytic parallel-beam sinograms.
- :func:`poisson_noise`, :func:`angle_subsets`: degraded tomographic data (angles: :func:`mixscale.tomo.parallel_angles`).
"""

from .foam import Foam, foam_phantom, foam_sinograms, foam_slices
from .mixed_scale import MIXED_SCALE_CLASSES, mixed_scale_shapes
from .projections import angle_subsets, poisson_noise
from .shapes import SHAPE_CLASSES, draw_shape, random_shapes
from .shapes3d import SHAPE_CLASSES_3D, draw_shape_3d, random_rotation, random_shapes_3d

__all__ = [
    "MIXED_SCALE_CLASSES",
    "SHAPE_CLASSES",
    "SHAPE_CLASSES_3D",
    "Foam",
    "angle_subsets",
    "draw_shape",
    "draw_shape_3d",
    "foam_phantom",
    "foam_sinograms",
    "foam_slices",
    "mixed_scale_shapes",
    "poisson_noise",
    "random_rotation",
    "random_shapes",
    "random_shapes_3d",
]
