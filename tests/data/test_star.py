"""RELION STAR points: the written files read by teamtomo's ``starfile`` (an independent parser), their
coordinates against RELION's own conversions (RELION 5: ``angst / pixel_size + size / 2`` back to pixels),
the detector's output on an MRC tomogram through the API and the CLI, and bad requests refused."""

import numpy as np
import pytest
import torch

from mixscale import api
from mixscale.data import write_image
from mixscale.data.star import read_points_star, write_points_star

starfile = pytest.importorskip("starfile", reason="the reference STAR parser comes with the test extra")

POINTS = np.array([[0, 0, 0], [3, 7, 10], [8, 15, 20]])  # (z, y, x) voxel indices
CLASSES, SCORES = np.array([1, 2, 1]), np.array([0.9, 0.75, 0.5])


def _particles(path):
    table = starfile.read(path, always_dict=True)
    assert list(table) == ["particles"]
    return table["particles"]


@pytest.mark.parametrize("shape", [(9, 16, 21), (10, 16, 22)])  # odd and even sizes: the centre is size / 2
def test_relion5_coordinates_are_angstrom_from_the_centre_and_come_back_exactly(tmp_path, shape):
    voxel = (4.0, 2.5, 2.5)
    path = write_points_star(tmp_path / "p.star", POINTS, CLASSES, SCORES, name="TS_01", shape=shape,
                             voxel_size=voxel)
    assert path.read_text().startswith("# version 50001\n")
    df = _particles(path)
    assert list(df.columns) == ["rlnTomoName", "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
                                "rlnCenteredCoordinateZAngst", "rlnClassNumber", "rlnAutopickFigureOfMerit"]
    assert df["rlnTomoName"].tolist() == ["TS_01"] * 3 and df["rlnClassNumber"].tolist() == [1, 2, 1]
    for axis, column in zip("ZYX", range(3)):
        expected = (POINTS[:, column] - shape[column] / 2) * voxel[column]
        np.testing.assert_allclose(df[f"rlnCenteredCoordinate{axis}Angst"], expected, atol=1e-6)
        # RELION 5 back to pixels: angst / pixel size + size / 2
        back = df[f"rlnCenteredCoordinate{axis}Angst"] / voxel[column] + shape[column] / 2
        np.testing.assert_allclose(back, POINTS[:, column], atol=1e-6)
    np.testing.assert_allclose(df["rlnAutopickFigureOfMerit"], SCORES)
    points, classes = read_points_star(path, shape=shape, voxel_size=voxel)
    np.testing.assert_allclose(points, POINTS, atol=1e-6)
    assert classes.tolist() == CLASSES.tolist()


def test_relion4_coordinates_are_pixels_times_the_binning_and_2d_names_the_micrograph(tmp_path):
    path = write_points_star(tmp_path / "p.star", POINTS, CLASSES, SCORES, convention="relion4", name="TS_01",
                             binning=4)
    assert path.read_text().startswith("# version 30001\n")
    df = _particles(path)
    np.testing.assert_allclose(df[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy(),
                               POINTS[:, ::-1] * 4)
    np.testing.assert_allclose(read_points_star(path, binning=4)[0], POINTS)
    flat = write_points_star(tmp_path / "m.star", POINTS[:, 1:], CLASSES, SCORES, convention="relion4",
                             name="mic_001")
    df = _particles(flat)
    assert list(df.columns[:3]) == ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]
    np.testing.assert_allclose(read_points_star(flat)[0], POINTS[:, 1:])


def test_a_star_file_written_by_starfile_is_read(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"rlnTomoName": ["a", "a"], "rlnCenteredCoordinateXAngst": [10.0, -5.0],
                       "rlnCenteredCoordinateYAngst": [0.0, 2.5], "rlnCenteredCoordinateZAngst": [-20.0, 0.0]})
    starfile.write({"particles": df}, tmp_path / "in.star")
    points, classes = read_points_star(tmp_path / "in.star", shape=(20, 30, 40), voxel_size=5.0)
    np.testing.assert_allclose(points, [[6.0, 15.0, 22.0], [10.0, 15.5, 19.0]])
    assert classes.tolist() == [1, 1]


def test_bad_star_requests_are_refused_and_write_nothing(tmp_path):
    out = tmp_path / "p.star"
    with pytest.raises(ValueError, match="needs the voxel size in Angstrom"):
        write_points_star(out, POINTS, CLASSES, SCORES, shape=(9, 16, 21))
    with pytest.raises(ValueError, match="voxel_size=0 is not allowed"):
        write_points_star(out, POINTS, CLASSES, SCORES, shape=(9, 16, 21), voxel_size=0)
    with pytest.raises(ValueError, match="2D image's points are written with convention='relion4'"):
        write_points_star(out, POINTS[:, 1:], CLASSES, SCORES, voxel_size=1.0)
    with pytest.raises(ValueError, match="convention='relion3' is not allowed"):
        write_points_star(out, POINTS, CLASSES, SCORES, convention="relion3")
    with pytest.raises(ValueError, match="name='my tomo' is not allowed"):
        write_points_star(out, POINTS, CLASSES, SCORES, convention="relion4", name="my tomo")
    (tmp_path / "x.star").write_text("data_particles\nloop_\n_rlnAngleRot #1\n10\n")
    with pytest.raises(ValueError, match="labels \\[.rlnAngleRot.\\], not X, Y"):
        read_points_star(tmp_path / "x.star")
    assert not out.exists()


@pytest.fixture
def tomogram(tmp_path):
    """A 3D detection model whose object class wins where the volume is bright, and an MRC volume."""
    pytest.importorskip("mrcfile", reason="MRC needs the extra mixscale[em]")
    from mixscale.model import ModelInfo, save_model
    from mixscale.nets import create_net

    torch.manual_seed(0)
    net = create_net("classifier", spatial_dims=3, patch_shape=9, depth=1, base_channels=4, hidden_channels=8,
                     norm=None).eval()
    info = ModelInfo(net_name="classifier", net_config=net.config(), task="detection",
                     class_names=["background", "particle"], normalization={"mean": [0.0], "std": [1.0]})
    volume = np.random.default_rng(0).normal(size=(12, 20, 24)).astype(np.float32)
    write_image(tmp_path / "TS_07.mrc", volume, voxel_size=(6.0, 5.0, 5.0))
    return str(save_model(tmp_path / "m.safetensors", net, info)), str(tmp_path / "TS_07.mrc")


def test_detect_writes_relion5_with_the_tomograms_voxel_size(tmp_path, tomogram):
    model, volume = tomogram
    found = api.detect(model, volume, threshold=0.0, min_distance=4, output=tmp_path / "p.star")
    assert len(found["points"]) > 3
    df = _particles(tmp_path / "p.star")
    assert set(df["rlnTomoName"]) == {"TS_07"}
    centre, voxel = np.array([12, 20, 24]) / 2, np.array([6.0, 5.0, 5.0])
    expected = ((found["points"] - centre) * voxel)[:, ::-1]
    got = df[["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"]]
    np.testing.assert_allclose(got.to_numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="needs the voxel size in Angstrom"):  # before any detection runs
        api.detect(model, np.zeros((12, 20, 24), np.float32), output=tmp_path / "r.star")
    assert not (tmp_path / "r.star").exists()
    given = api.detect(model, volume, threshold=0.0, min_distance=4, output=tmp_path / "q.star", voxel_size=10.0)
    np.testing.assert_allclose(read_points_star(tmp_path / "q.star", shape=(12, 20, 24), voxel_size=10.0)[0],
                               given["points"], atol=1e-6)


def test_the_cli_writes_relion4_and_refuses_star_options_for_a_csv(tmp_path, tomogram, capsys):
    from mixscale.cli.main import main

    model, volume = tomogram
    out = tmp_path / "p.star"
    assert main(["detect", model, volume, "-o", str(out), "--threshold", "0", "--min-distance", "4",
                 "--star", "relion4", "--binning", "2"]) == 0
    df = _particles(out)
    assert "rlnCoordinateZ" in df and (df["rlnCoordinateX"] % 2 == 0).all()
    assert main(["detect", model, volume, "-o", str(tmp_path / "p.csv"), "--star", "relion5"]) == 2
    assert "star='relion5' is not allowed; expected only with an output ending in .star" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()
