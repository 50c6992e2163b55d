"""Export to ONNX and TorchScript: onnxruntime and torch.jit.load reproduce ``mixscale predict`` for every net
of the zoo, 2D and 3D, at batch and spatial sizes other than the export's, also in a process where
mixscale cannot be imported; the graphs hold only standard ONNX operators; bad requests are refused."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from mixscale import api
from mixscale.model import ModelInfo, save_model, save_ensemble
from mixscale.nets import create_net

# torch 2.13 marks TorchScript deprecated (in favour of torch.export); it still loads and runs
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
onnx = pytest.importorskip("onnx", reason="the ONNX tests need the extra mixscale[onnx]")
ort = pytest.importorskip("onnxruntime", reason="the ONNX tests need the extra mixscale[onnx]")

NETS = {"msd": dict(depth=8, dilations=[1, 2, 3, 4]), "unet": dict(depth=3, base_channels=4),
        "unet3plus": dict(depth=3, base_channels=4), "smsnet": dict(hidden_nodes=8),
        "random_unet": dict()}
#: sizes unlike the export's example (64 in 2D, 32 in 3D, batch 2), and not multiples of the U-Nets' grids
SIZES = {2: (3, 45, 38), 3: (3, 21, 19, 18)}


def _model(path, name, dims, *, task="segmentation", classes=3, channels=2, seed=0, **extra):
    torch.manual_seed(seed)
    net = create_net(name, spatial_dims=dims, in_channels=channels, out_channels=classes, **NETS.get(name, {}),
                     **extra)
    if name == "msd":  # MS-D starts with a zero final layer: give it one, so outputs differ per pixel
        with torch.no_grad():
            net.final_weight.normal_(0, 0.5)
            net.final_bias.normal_(0, 0.1)
    info = ModelInfo(net_name=name, net_config=net.config(), task=task,
                     class_names=[f"c{i}" for i in range(classes)] if task == "segmentation" else None,
                     normalization={"mean": [3.0, -1.0][:channels], "std": [2.0, 0.5][:channels]},
                     target_normalization={"mean": [10.0], "std": [4.0]} if task == "regression" else None)
    return str(save_model(path, net.eval(), info))


def _inputs(dims, seed=1):
    x = np.random.default_rng(seed).normal(size=SIZES[dims]).astype(np.float32)
    return np.stack([x * 2 + 3, x[::-1] * 0.5 - 1], axis=1)  # (N, 2, *S): in the training's units


def _predicted(model, batch):
    """What ``mixscale predict`` gives (the lean MS-D, the numpy pipeline), image by image."""
    return np.stack([api.predict(model, image, channel_axis=0, probabilities=True) for image in batch])


def _torch_model(model, batch):
    """The torch model as mixscale runs it (the lean MS-D), on a batch normalised in torch."""
    from mixscale.model import open_model
    from mixscale.model.model import channel_affine

    m = open_model(model)
    with torch.no_grad():
        return m.predictor()(channel_affine(torch.from_numpy(batch), m.info.normalization, inverse=True)).numpy()


def _relative(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _onnx_run(path, batch):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": batch})[0]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", list(NETS))
def test_onnx_and_torchscript_reproduce_predict_at_other_sizes(tmp_path, name, dims):
    model = _model(tmp_path / "m.safetensors", name, dims)
    batch = _inputs(dims)
    expected = _predicted(model, batch)
    out = _onnx_run(api.export(model, tmp_path / "m.onnx"), batch)
    assert out.shape == expected.shape == (batch.shape[0], 3, *batch.shape[2:])
    assert _relative(out, expected) < 1e-5
    scripted = torch.jit.load(str(api.export(model, tmp_path / "m.pt")))
    assert _relative(scripted(torch.from_numpy(batch)).numpy(), _torch_model(model, batch)) < 1e-6


def test_the_onnx_graph_is_standard_operators_at_opset_18_with_dynamic_sizes(tmp_path):
    model = _model(tmp_path / "m.safetensors", "msd", 2)
    graph = onnx.load(str(api.export(model, tmp_path / "m.onnx")))
    onnx.checker.check_model(graph, full_check=True)
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert {n.domain for n in graph.graph.node} <= {"", "ai.onnx"}  # no Python or custom operators
    pads = [n for n in graph.graph.node if n.op_type == "Pad"]
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    assert len(pads) == 8 and len(convs) == 9  # one reflect Pad per dilated layer (depth 8), the 1x1 unpadded
    assert all(onnx.helper.get_attribute_value(a) == b"reflect" for n in pads for a in n.attribute
               if a.name == "mode")
    shape = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert shape[1] == 2 and all(isinstance(d, str) for d in (shape[0], *shape[2:]))  # batch, spatial symbolic
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["task"] == "segmentation" and json.loads(meta["class_names"]) == ["c0", "c1", "c2"]
    assert json.loads(meta["normalization"]) == {"mean": [3.0, -1.0], "std": [2.0, 0.5]}


def test_regression_outputs_are_in_the_target_units_and_raw_is_the_network_alone(tmp_path):
    model = _model(tmp_path / "r.safetensors", "msd", 2, task="regression", classes=1)
    batch = _inputs(2)
    expected = np.stack([api.predict(model, image, channel_axis=0) for image in batch])[:, None]
    assert _relative(_onnx_run(api.export(model, tmp_path / "r.onnx"), batch), expected) < 1e-5
    api.export(model, tmp_path / "raw.onnx", raw=True)  # the network alone: normalise and rescale by hand
    normalised = (batch - np.array([3.0, -1.0], np.float32)[:, None, None]) / np.array([2.0, 0.5],
                                                                                      np.float32)[:, None, None]
    raw = _onnx_run(tmp_path / "raw.onnx", normalised.astype(np.float32))
    assert _relative(raw * 4.0 + 10.0, expected) < 1e-5
    assert _relative(_onnx_run(tmp_path / "raw.onnx", batch) * 4.0 + 10.0, expected) > 1e-2  # it does not normalise


def test_exported_files_run_where_mixscale_cannot_be_imported(tmp_path):
    model = _model(tmp_path / "m.safetensors", "unet", 2)
    batch = _inputs(2)
    np.save(tmp_path / "x.npy", batch)
    api.export(model, tmp_path / "m.onnx")
    api.export(model, tmp_path / "m.pt")
    blocker = tmp_path / "blocked" / "mixscale"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('mixscale is not installed here')\n")
    script = (f"import numpy as np, onnxruntime, torch\n"
              f"try:\n    import mixscale\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('imported')\n"
              f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
              f"s = onnxruntime.InferenceSession({str(tmp_path / 'm.onnx')!r}, providers=['CPUExecutionProvider'])\n"
              f"np.save({str(tmp_path / 'onnx.npy')!r}, s.run(None, {{'input': x}})[0])\n"
              f"m = torch.jit.load({str(tmp_path / 'm.pt')!r})\n"
              f"np.save({str(tmp_path / 'ts.npy')!r}, m(torch.from_numpy(x)).numpy())\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env={"PYTHONPATH": str(blocker.parent), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert _relative(np.load(tmp_path / "onnx.npy"), _predicted(model, batch)) < 1e-5
    assert _relative(np.load(tmp_path / "ts.npy"), _torch_model(model, batch)) < 1e-6


def test_a_net_with_a_fixed_input_shape_needs_static_and_then_matches(tmp_path):
    torch.manual_seed(0)
    net = create_net("autoencoder", image_shape=(24, 20), depth=2, base_channels=4, latent_dim=8).eval()
    info = ModelInfo(net_name="autoencoder", net_config=net.config(), task="regression",
                     normalization={"mean": [0.5], "std": [0.25]}, target_normalization={"mean": [0.5], "std": [0.25]})
    model = str(save_model(tmp_path / "ae.safetensors", net, info))
    with pytest.raises(ValueError, match=r"net 'autoencoder' takes only inputs of spatial shape \[24, 20\].*"
                                         r"pass static=True \(CLI: --static\)"):
        api.export(model, tmp_path / "ae.onnx")
    assert not list(tmp_path.glob("ae.onnx*"))
    batch = np.random.default_rng(0).uniform(size=(2, 1, 24, 20)).astype(np.float32)
    expected = np.stack([api.predict(model, image[0]) for image in batch])[:, None]
    assert _relative(_onnx_run(api.export(model, tmp_path / "ae.onnx", static=True), batch), expected) < 1e-5


@pytest.mark.parametrize("dims", [2, 3])
def test_a_detection_model_exports_its_score_map_and_the_peaks_of_it_are_detects(tmp_path, dims):
    from mixscale.infer.detect import object_peaks

    torch.manual_seed(0)
    net = create_net("classifier", spatial_dims=dims, patch_shape=9, depth=1, base_channels=4, hidden_channels=8,
                     out_channels=3)
    with torch.no_grad():  # batch norm with statistics of its own, so that eval differs from identity
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2)
    info = ModelInfo(net_name="classifier", net_config=net.config(), task="detection",
                     class_names=["background", "a", "b"], normalization={"mean": [3.0], "std": [2.0]})
    model = str(save_model(tmp_path / "d.safetensors", net.eval(), info))
    batch = np.random.default_rng(1).normal(3, 2, size=SIZES[dims]).astype(np.float32)[:, None]
    out = _onnx_run(api.export(model, tmp_path / "d.onnx"), batch)
    assert out.shape == (batch.shape[0], 3, *batch.shape[2:])
    x = torch.from_numpy((batch - 3) / 2)
    with torch.no_grad():  # the naive reference: the classifier on the reflect-padded patch around a pixel
        padded = torch.nn.functional.pad(x, (4,) * (2 * dims), mode="reflect")
        for point in [(0,) * dims, (5,) * dims, tuple(s - 1 for s in batch.shape[2:])]:
            patch = padded[(slice(0, 1), slice(None)) + tuple(slice(p, p + 9) for p in point)]
            expected = torch.softmax(net(patch), dim=1)[0].numpy()
            np.testing.assert_allclose(out[(0, slice(None)) + point], expected, atol=1e-5)
    scripted = torch.jit.load(str(api.export(model, tmp_path / "d.pt")))
    assert _relative(scripted(torch.from_numpy(batch)).numpy(), out) < 1e-5
    found = api.detect(model, batch[0, 0], threshold=0.4, min_distance=3)
    points, classes, _ = object_peaks(out[0], threshold=0.4, min_distance=3)
    assert len(points) > 0
    np.testing.assert_array_equal(points, found["points"])
    np.testing.assert_array_equal(classes, found["classes"])


def test_bad_requests_are_clear_and_write_nothing(tmp_path):
    model = _model(tmp_path / "m.safetensors", "msd", 2)
    with pytest.raises(ValueError, match=r"output='.*m\.bin' is not allowed; expected a file ending in \.onnx"):
        api.export(model, tmp_path / "m.bin")
    with pytest.raises(ValueError, match="format='tflite' is not allowed"):
        api.export(model, tmp_path / "m.onnx", format="tflite")
    other = _model(tmp_path / "n.safetensors", "msd", 2, seed=1)
    with pytest.raises(ValueError, match="ensemble is exported member by member"):
        api.export(str(save_ensemble(tmp_path / "e.safetensors", [model, other])), tmp_path / "e.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.safetensors", "m.safetensors", "n.safetensors"]


def test_the_cli_exports_and_names_the_extra_when_onnx_is_missing(tmp_path):
    model = _model(tmp_path / "m.safetensors", "msd", 2)
    cli = [sys.executable, "-m", "mixscale.cli.main", "export", model]
    r = subprocess.run(cli + ["-o", str(tmp_path / "m.onnx")], capture_output=True, text=True)
    assert r.returncode == 0 and "wrote" in r.stdout, r.stderr
    assert _relative(_onnx_run(tmp_path / "m.onnx", _inputs(2)), _predicted(model, _inputs(2))) < 1e-5
    blocker = tmp_path / "blocked" / "onnx"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('no onnx here')\n")
    import os

    env = {**os.environ, "PYTHONPATH": str(blocker.parent)}
    r = subprocess.run(cli + ["-o", str(tmp_path / "x.onnx")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "pip install 'mixscale[onnx]'" in r.stderr, r.stderr
    assert not (tmp_path / "x.onnx").exists()
