"""The model file: exact round trip, no code on load, clear refusals."""

import json
import pickle

import pytest
import torch

from mixscale.model import FORMAT_VERSION, ModelInfo, load_model, read_model_info, save_model
from mixscale.nets import create_net


def _trained_like(name, **kw):
    torch.manual_seed(0)
    net = create_net(name, **kw)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # non-trivial weights, zero final layer included
    return net.eval()


@pytest.mark.parametrize("name, kw, shape", [
    ("msd", dict(depth=5, width=2, dilations=[1, 3], in_channels=2, out_channels=3), (1, 2, 17, 15)),
    ("msd", dict(spatial_dims=3, depth=3, dilations=[1, 2], norm="batch"), (1, 1, 9, 8, 7)),
    ("unet", dict(depth=3, base_channels=4, growth_rate=1.5, out_channels=2), (2, 1, 19, 13)),
])
def test_round_trip_gives_identical_outputs(tmp_path, name, kw, shape):
    net = _trained_like(name, **kw)
    cin, cout = net.config()["in_channels"], net.config()["out_channels"]
    info = ModelInfo(net_name=name, net_config=net.config(), task="segmentation",
                     class_names=["a", "b", "c"][:cout], normalization={"mean": [0.5] * cin, "std": [2.0] * cin},
                     train_config={"seed": 3})
    path = save_model(tmp_path / "m.safetensors", net, info)
    loaded, info2 = load_model(path)
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    assert info2 == info and info2.format_version == FORMAT_VERSION
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file if ever unpickled


def test_pickle_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.safetensors"
    torch.save({"state_dict": _Payload(str(marker))}, bad)  # a zip-pickle checkpoint renamed
    with pytest.raises(ValueError, match="not a valid mixscale model file: no safetensors header .a pickled checkpoint"):
        load_model(bad)
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(pickle.dumps(_Payload(str(marker))))  # a bare pickle
    with pytest.raises(ValueError, match="not a valid mixscale model file: no safetensors header .a pickled checkpoint"):
        load_model(raw)
    assert not marker.exists()


def test_newer_format_and_missing_metadata_are_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "future.safetensors"
    meta = {"net_name": "msd", "net_config": {}, "format_version": FORMAT_VERSION + 1}
    save_file({"x": torch.zeros(1)}, str(path), metadata={"mixscale": json.dumps(meta)})
    with pytest.raises(ValueError, match=rf"format_version={FORMAT_VERSION + 1}; this mixscale reads versions \[1, 2\]"):
        read_model_info(path)
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, str(plain))
    with pytest.raises(ValueError, match="without mixscale metadata"):
        load_model(plain)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_model(tmp_path / "nope.safetensors")


def test_version_1_files_read_with_their_2_5d_layout_lifted_out_of_the_training_config(tmp_path):
    """A version-1 file kept context_slices and slice_axis only in train_config; they become fields."""
    from safetensors.torch import save_file

    net = _trained_like("msd", depth=3, in_channels=3, out_channels=2)
    old = {"net_name": "msd", "net_config": net.config(), "task": "segmentation", "class_names": ["a", "b"],
           "normalization": None, "target_normalization": None, "format_version": 1,
           "train_config": {"data": {"context_slices": 1, "slice_axis": 2}}}
    path = tmp_path / "v1.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"mixscale": json.dumps(old)})
    loaded, info = load_model(path)
    assert (info.context_slices, info.slice_axis, info.format_version) == (1, 2, FORMAT_VERSION)
    assert (info.in_channels, info.out_channels, info.spatial_dims) == (3, 2, 2)
    x = torch.randn(1, 3, 11, 9)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    again = save_model(tmp_path / "v2.safetensors", loaded, info)  # rewritten as version 2, same facts
    assert read_model_info(again) == info


def test_model_facts_come_from_the_constructor_when_the_file_omits_them(tmp_path):
    """in_channels / spatial_dims missing from net_config come from the constructor's defaults, not a guess."""
    info = ModelInfo(net_name="msd", net_config={"depth": 2})
    assert (info.in_channels, info.out_channels, info.spatial_dims) == (1, 1, 2)
    info3 = ModelInfo(net_name="unet", net_config={"spatial_dims": 3, "in_channels": 4})
    assert (info3.in_channels, info3.spatial_dims) == (4, 3)
