"""Voxel sizes read from the files that record them: OME-TIFF, ImageJ TIFF, TIFF resolution tags, HDF5."""

import h5py
import numpy as np
import tifffile

from mixscale.data import image_info

VOLUME = np.zeros((4, 8, 8), np.float32)


def test_ome_tiff_and_imagej_tiff_give_their_voxel_size(tmp_path):
    tifffile.imwrite(tmp_path / "o.ome.tif", VOLUME, ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.4, "PhysicalSizeZ": 3.0,
                               "PhysicalSizeXUnit": "nm"})
    info = image_info(tmp_path / "o.ome.tif")
    assert info["voxel_size"] == (3.0, 0.4, 0.5) and info["unit"] == "nanometer"
    tifffile.imwrite(tmp_path / "ij.tif", VOLUME, imagej=True, resolution=(1 / 0.25, 1 / 0.2),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})
    info = image_info(tmp_path / "ij.tif")
    assert info["voxel_size"] == (2.0, 0.2, 0.25) and info["unit"] == "micrometer"


def test_resolution_tags_count_and_the_default_is_no_voxel_size(tmp_path):
    tifffile.imwrite(tmp_path / "cm.tif", VOLUME[0], resolution=(1e4, 2e4), resolutionunit="CENTIMETER")
    info = image_info(tmp_path / "cm.tif")
    assert info["voxel_size"] == (5e-5, 1e-4) and info["unit"] == "centimeter"
    tifffile.imwrite(tmp_path / "plain.tif", VOLUME)
    assert "voxel_size" not in image_info(tmp_path / "plain.tif")


def test_hdf5_element_size_um(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("data", data=VOLUME).attrs["element_size_um"] = [1.5, 0.5, 0.5]
        f.create_dataset("bare", data=VOLUME)
    info = image_info(f"{tmp_path / 'v.h5'}:/data")
    assert info["voxel_size"] == (1.5, 0.5, 0.5) and info["unit"] == "micrometer"
    assert "voxel_size" not in image_info(f"{tmp_path / 'v.h5'}:/bare")
