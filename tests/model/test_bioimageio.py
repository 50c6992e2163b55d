"""BioImage Model Zoo packages: bioimageio.core's own test_model passes (status "passed", not merely "valid
format") for each weight format at tolerance 1e-4, in a process where mixscale cannot be imported; mixscale
import restores the attached model file, which reproduces the test output exactly; bad input is refused."""

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mixscale import api
from mixscale.model import ModelInfo, load_model, save_model
from mixscale.model.export import bioimageio as zoo
from mixscale.nets import create_net

pytest.importorskip("onnx", reason="zoo packages hold ONNX weights: extra mixscale[onnx]")
pytest.importorskip("bioimageio.core", reason="the zoo's test_model needs the extra mixscale[bioimageio]")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TEST_MODEL = """
import json, sys, zipfile
import yaml
try:
    import mixscale
except ImportError:
    pass
else:
    raise SystemExit("mixscale was importable")
from bioimageio.core import test_model
out = {}
for package in sys.argv[1:]:
    with zipfile.ZipFile(package) as z:
        formats = list(yaml.safe_load(z.read("rdf.yaml"))["weights"])
    for wf in formats:
        s = test_model(package, weight_format=wf, absolute_tolerance=1e-4, relative_tolerance=1e-4)
        out[package + ":" + wf] = [s.status, [(d.name, [e.msg[:200] for e in d.errors]) for d in s.details
                                              if d.status != "passed"]]
print(json.dumps(out))
"""


def _model(path, name, dims, *, task="segmentation", channels=1, context=0, **kw):
    torch.manual_seed(0)
    classes = 3 if task == "segmentation" else 1
    net = create_net(name, spatial_dims=dims, in_channels=channels * (2 * context + 1), out_channels=classes, **kw)
    if name == "msd":
        with torch.no_grad():
            net.final_weight.normal_(0, 0.5)
    info = ModelInfo(net_name=name, net_config=net.config(), task=task, context_slices=context,
                     class_names=["background", "membrane", "cell"] if task == "segmentation" else None,
                     normalization={"mean": [3.0] * channels, "std": [2.0] * channels},
                     target_normalization={"mean": [10.0], "std": [4.0]} if task == "regression" else None)
    return str(save_model(path, net.eval(), info))


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("zoo")
    models = {"msd2d": _model(tmp / "msd.safetensors", "msd", 2, depth=8, dilations=[1, 2, 3, 4]),
              "unet3d": _model(tmp / "unet.safetensors", "unet", 3, depth=2, base_channels=4),
              "smsnet2d": _model(tmp / "smsnet.safetensors", "smsnet", 2, hidden_nodes=4, dilations=[1, 2, 4],
                                 norm="batch", padding_mode="reflect"),
              "msd_2p5d_regression": _model(tmp / "reg.safetensors", "msd", 2, task="regression", context=1,
                                            depth=4, dilations=[1, 2])}
    return {key: (m, api.export(m, tmp / f"{key}.zip", name=f"mixscale test {key}", authors=("Test Author",)))
            for key, m in models.items()}


def test_the_zoos_test_model_passes_for_each_weight_format_without_mixscale(packages, tmp_path):
    blocker = tmp_path / "blocked" / "mixscale"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('mixscale is not installed here')\n")
    r = subprocess.run([sys.executable, "-c", TEST_MODEL, *(str(p) for _, p in packages.values())],
                       capture_output=True, text=True, env={"PYTHONPATH": str(blocker.parent), "PATH": "/usr/bin:/bin",
                                                            "HOME": str(tmp_path)}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    # ONNX, TorchScript and state dict + architecture file for every package (every net here takes any size)
    assert len(results) == 3 * len(packages)
    assert {k.split(":")[-1] for k in results} == {"onnx", "torchscript", "pytorch_state_dict"}
    for key, (status, failed) in results.items():
        assert status == "passed", (key, failed)


def test_the_package_describes_the_model(packages):
    with zipfile.ZipFile(packages["msd_2p5d_regression"][1]) as z:
        names = set(z.namelist())
        rdf = yaml.safe_load(z.read("rdf.yaml"))
    assert {"rdf.yaml", "model.onnx", "model.pt", "test_input.npy", "test_output.npy", "cover.png", "README.md",
            "mixscale.safetensors", "weights.pt", "architectures.py"} <= names
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] == "MSD"
    for key, callable_ in (("unet3d", "UNet"), ("smsnet2d", "SMSNet")):
        with zipfile.ZipFile(packages[key][1]) as z:
            code = z.read("architectures.py")
            arch = yaml.safe_load(z.read("rdf.yaml"))["weights"]["pytorch_state_dict"]["architecture"]
        assert arch["callable"] == callable_ and arch["source"] == "architectures.py"
        assert arch["kwargs"] == load_model(packages[key][0])[1].net_config  # the net's config() as it is
    assert code == (Path(zoo.__file__).with_name("architectures.py")).read_bytes()  # copied as it is
    imports = [n for n in ast.walk(ast.parse(code)) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not any("mixscale" in (getattr(n, "module", None) or "") or any("mixscale" in a.name for a in n.names)
                   for n in imports)  # the architecture never imports mixscale
    inp, out = rdf["inputs"][0], rdf["outputs"][0]
    assert inp["axes"][1]["channel_names"] == ["channel0_slice-1", "channel0_slice+0", "channel0_slice+1"]
    assert inp["preprocessing"] == [{"id": "fixed_zero_mean_unit_variance",
                                     "kwargs": {"mean": [3.0] * 3, "std": [2.0] * 3, "axis": "channel"}}]
    assert out["postprocessing"] == [{"id": "scale_linear", "kwargs": {"gain": 4.0, "offset": 10.0}}]
    halo = out["axes"][2]["halo"]
    assert halo == 6 and inp["axes"][2]["size"] == {"min": 16, "step": 1}  # depth 4, dilations 1, 2: 1+2+1+2
    assert rdf["cite"][0]["doi"] == "10.1073/pnas.1715832114"


def test_import_restores_the_model_file_which_reproduces_the_test_output(packages, tmp_path):
    model, package = packages["msd2d"]
    out = api.import_package(package, tmp_path / "back.safetensors")
    assert out.read_bytes() == open(model, "rb").read()
    with zipfile.ZipFile(package) as z:
        z.extract("test_input.npy", tmp_path)
        z.extract("test_output.npy", tmp_path)
    x = np.load(tmp_path / "test_input.npy")
    probs = api.predict(out, x[0], channel_axis=0, probabilities=True)
    np.testing.assert_allclose(probs, np.load(tmp_path / "test_output.npy")[0], atol=1e-6)
    r = subprocess.run([sys.executable, "-m", "mixscale.cli.main", "import", str(package), "-o",
                        str(tmp_path / "back.safetensors")], capture_output=True, text=True)
    assert r.returncode == 2 and "exists" in r.stderr  # never replaced without --overwrite


def test_a_package_whose_model_file_was_changed_is_refused(packages, tmp_path):
    model, package = packages["msd2d"]
    other = _model(tmp_path / "other.safetensors", "msd", 2, depth=8, dilations=[1, 2, 3, 4])
    with torch.no_grad():  # the same architecture with other weights
        net, info = load_model(other)
        net.final_bias.add_(0.5)
        save_model(tmp_path / "other.safetensors", net, info)
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.namelist():
            data = (tmp_path / "other.safetensors").read_bytes() if item == "mixscale.safetensors" else src.read(item)
            dst.writestr(item, data)
    with pytest.raises(ValueError, match="does not reproduce the package's test output"):
        api.import_package(tampered, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_bad_package_requests_are_refused(tmp_path):
    model = _model(tmp_path / "m.safetensors", "msd", 2, depth=4)
    with pytest.raises(ValueError, match=r"name='a, b' is not allowed; expected 5 to 128 letters"):
        api.export(model, tmp_path / "p.zip", name="a, b")
    with pytest.raises(ValueError, match="raw and static do not apply"):
        api.export(model, tmp_path / "p.zip", raw=True)
    with pytest.raises(ValueError, match="package=.* is not allowed; expected a BioImage Model Zoo package"):
        api.import_package(model, tmp_path / "x.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
