"""Data layer: lazy readers/writers, label conventions, normalisation, splits,
augmentation, patch sampling and PyTorch datasets.

Everything here depends only on numpy, scipy, torch and file-format libraries.
"""

from ._address import natural_sort_key
from ._readers import HDF5Array, SliceStack, WholeFileReadWarning
from ._write import atomic_path
from .augment import Augmentation, DihedralTransform, apply_dihedral, dihedral_transforms, invert_dihedral
from .dataset import PatchDataset, WholeImageDataset
from .digest import array_sha256
from .io import image_info, open_image, output_exists, read_image, write_image
from .labels import LabelConventionWarning, check_label_convention, prepare_labels
from .normalize import Normalization, compute_normalization, denormalize, normalize
from .patches import PatchLocation, PatchSampler
from .points import PointPatchDataset
from .points_csv import read_points_csv, write_points_csv
from .split import pixel_split, split_images

__all__ = [
    "open_image", "read_image", "write_image", "image_info", "output_exists", "natural_sort_key", "atomic_path", "array_sha256",
    "HDF5Array", "SliceStack", "WholeFileReadWarning", "read_points_csv", "write_points_csv",
    "prepare_labels", "check_label_convention", "LabelConventionWarning",
    "Normalization", "compute_normalization", "normalize", "denormalize",
    "pixel_split", "split_images",
    "DihedralTransform", "dihedral_transforms", "apply_dihedral", "invert_dihedral", "Augmentation",
    "PatchSampler", "PatchLocation", "PatchDataset", "WholeImageDataset", "PointPatchDataset",
]
