"""Model files from anywhere: each malformed file is one InvalidModelFile with its reason, before anything is
built; the CLI says it in one line; nothing is written; a valid file still loads exactly."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mixscale import api
from mixscale.model import InvalidModelFile, load_model, read_model_info, save_ensemble

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # the mutation helpers, shared with the fuzz run (import mode importlib)
from model_file_mutations import join, split, valid_model, with_meta, with_net_config  # noqa: E402
IMAGE = np.random.default_rng(0).normal(size=(24, 20)).astype(np.float32)


@pytest.fixture
def valid(tmp_path):
    return valid_model(tmp_path / "valid.safetensors")


def _write(tmp_path, blob, name="bad.safetensors"):
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def _refused_everywhere(path, match, tmp_path, *, in_metadata=True):
    """The loader, info and predict each raise InvalidModelFile with the reason; predict writes nothing.

    ``read_model_info`` (the metadata alone) refuses it too when the fault is in the metadata itself."""
    calls = [lambda: load_model(path), lambda: api.info(str(path)),
             lambda: api.predict(path, IMAGE, tmp_path / "out.tif")]
    for call in calls + ([lambda: read_model_info(path)] if in_metadata else []):
        with pytest.raises(InvalidModelFile, match=match):
            call()
    assert not (tmp_path / "out.tif").exists()


def test_absurd_width_is_refused_without_allocating(valid, tmp_path):
    header, data = split(valid)
    path = _write(tmp_path, join(with_net_config(header, width=60000), data))
    _refused_everywhere(path, "describes a network larger than the file's tensors", tmp_path, in_metadata=False)
    huge = _write(tmp_path, join(with_net_config(header, width=1000000), data), "huge.safetensors")
    _refused_everywhere(huge, r"net_config.width=1000000 is out of range \(at most 65536", tmp_path)


def test_absurd_depth_is_refused(valid, tmp_path):
    header, data = split(valid)
    path = _write(tmp_path, join(with_net_config(header, depth=10 ** 9), data))
    _refused_everywhere(path, "net_config.depth=1000000000 is out of range", tmp_path)


@pytest.mark.parametrize("cut", [20, 300, -7])
def test_truncated_file(valid, tmp_path, cut):
    raw = valid.read_bytes()
    path = _write(tmp_path, raw[:cut])
    match = "outside the file's" if cut < 0 else "no safetensors header|unreadable safetensors header"
    _refused_everywhere(path, match, tmp_path)


def test_tensor_offsets_outside_the_file(valid, tmp_path):
    header, data = split(valid)
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"] = [0, len(data) + 64]
    _refused_everywhere(_write(tmp_path, join(header, data)), f"tensor '{name}' lies at bytes 0..", tmp_path)


def test_overlapping_tensors(valid, tmp_path):
    header, data = split(valid)
    a, b = [k for k in header if k != "__metadata__" and header[k]["shape"] == [1]][:2]
    header[b]["data_offsets"] = header[a]["data_offsets"]
    _refused_everywhere(_write(tmp_path, join(header, data)), "overlap in the file", tmp_path)


def test_metadata_as_a_list(valid, tmp_path):
    header, data = split(valid)
    header["__metadata__"]["mixscale"] = json.dumps([1, 2])
    _refused_everywhere(_write(tmp_path, join(header, data)), "its metadata is a JSON list, not an object", tmp_path)


def test_train_config_null(valid, tmp_path):
    header, data = split(valid)
    path = _write(tmp_path, join(with_meta(header, train_config=None), data))
    _refused_everywhere(path, "train_config: Input should be a valid dictionary", tmp_path)


@pytest.mark.parametrize("field, value, match", [
    ("net_name", "resnet", "unknown network 'resnet'"),
    ("task", "colouring", "task: Input should be"),
    ("class_names", {"a": 1}, "class_names: Input should be a valid list"),
    ("normalization", [0.5, 2.0], "normalization: Input should be a valid dictionary"),
    ("normalization", {"mean": [0.5], "std": [0.0]}, r"normalization.std must be positive"),
    ("slice_axis", 7, "slice_axis: Input should be less than or equal to 2"),
    ("format_version", 7, r"format_version=7; this mixscale reads versions \[1, 2\]"),
    ("surprise", 1, "surprise: Extra inputs are not permitted"),
    ("class_names", ["only one"], "1 class_names for out_channels=2"),
])
def test_wrong_metadata_fields(valid, tmp_path, field, value, match):
    header, data = split(valid)
    _refused_everywhere(_write(tmp_path, join(with_meta(header, **{field: value}), data)), match, tmp_path)


def test_unknown_net_argument(valid, tmp_path):
    header, data = split(valid)
    path = _write(tmp_path, join(with_net_config(header, bogus=3), data))
    _refused_everywhere(path, r"net_config has argument\(s\) \['bogus'\] that network 'msd' does not take",
                        tmp_path)


def test_transposed_final_layer(valid, tmp_path):
    header, data = split(valid)
    name = next(k for k in header if k != "__metadata__" and len(header[k]["shape"]) >= 2
                and header[k]["shape"][0] != header[k]["shape"][1])
    shape = header[name]["shape"]
    header[name]["shape"] = list(reversed(shape))
    _refused_everywhere(_write(tmp_path, join(header, data)),
                        rf"tensor '{name}' has shape \({', '.join(map(str, reversed(shape)))}\) in the file but "
                        rf"\({', '.join(map(str, shape))}\) in the network", tmp_path, in_metadata=False)


def test_depth_or_channels_that_disagree_with_the_tensors(valid, tmp_path):
    header, data = split(valid)
    deeper = _write(tmp_path, join(with_net_config(header, depth=5), data), "deeper.safetensors")
    _refused_everywhere(deeper, "of the network is missing from the file", tmp_path, in_metadata=False)
    wider = _write(tmp_path, join(with_meta(with_net_config(header, out_channels=3), class_names=None), data),
                   "wider.safetensors")
    _refused_everywhere(wider, "in the file but .* in the network its header describes", tmp_path,
                        in_metadata=False)


def test_missing_and_extra_tensors(valid, tmp_path):
    header, data = split(valid)
    name = next(k for k in header if k != "__metadata__")
    _refused_everywhere(_write(tmp_path, join({k: v for k, v in header.items() if k != name}, data), "m.safetensors"),
                        f"tensor '{name}' of the network is missing from the file", tmp_path, in_metadata=False)
    extra = {**header, "stowaway": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}
    _refused_everywhere(_write(tmp_path, join(extra, data), "e.safetensors"),
                        "tensor 'stowaway' in the file is not part of the network", tmp_path, in_metadata=False)


def test_ensemble_manifests_are_checked_too(valid, tmp_path):
    ens = save_ensemble(tmp_path / "ens.safetensors", [valid, valid])
    header, data = split(ens)
    manifest = json.loads(header["__metadata__"]["mixscale_ensemble"])
    manifest["members"][1]["info"]["net_config"]["width"] = 60000
    header["__metadata__"]["mixscale_ensemble"] = json.dumps(manifest)
    bad = _write(tmp_path, join(header, data))
    for call in (lambda: api.info(str(bad)), lambda: api.predict(bad, IMAGE)):
        with pytest.raises(InvalidModelFile, match=r"\(member 1\) is not a valid mixscale model file: its "
                                                   "net_config"):
            call()
    manifest["members"] = "all of them"
    header["__metadata__"]["mixscale_ensemble"] = json.dumps(manifest)
    with pytest.raises(InvalidModelFile, match="members: Input should be a valid list"):
        api.info(str(_write(tmp_path, join(header, data), "list.safetensors")))


def test_cli_says_it_in_one_line_and_writes_nothing(valid, tmp_path, capsys):
    from mixscale.cli.main import main

    header, data = split(valid)
    bad = _write(tmp_path, join(with_net_config(header, width=60000), data))
    np.save(tmp_path / "img.npy", IMAGE)
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a valid mixscale model file" in err[0] and "Traceback" not in err[0]
    assert main(["predict", str(bad), str(tmp_path / "img.npy"), "-o", str(tmp_path / "o.zarr"),
                 "--no-progress"]) == 2
    assert "is not a valid mixscale model file" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()


def test_valid_file_loads_bit_identically_and_info_reads_no_tensor(valid, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    net, info = load_model(valid)
    stored = load_file(str(valid))
    assert all(torch.equal(net.state_dict()[k], v) for k, v in stored.items())
    import mixscale.model.file as file_mod

    def no_tensor_read(*a, **k):
        raise AssertionError("info read the tensors")

    monkeypatch.setattr(file_mod, "load_tensors", no_tensor_read)
    described = api.info(str(valid))
    assert described["parameters"] == sum(p.numel() for p in net.parameters())
    assert described["receptive_field"] == net.receptive_field


def test_fuzz_hundreds_of_mutated_files(tmp_path):
    """Every mutation ends in InvalidModelFile (or is still a valid file), in under a second, memory bounded;
    run in a fresh process so that the peak memory it reports is this run's."""
    done = subprocess.run([sys.executable, str(HERE / "model_file_mutations.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["cases"] >= 300 and report["unexpected"] == []
    assert report["counts"]["invalid"] > 0.9 * 3 * report["cases"]
    assert report["slowest_s"] < 1.0, report["slowest"]
    assert report["peak_rss_growth_mb"] < 100
