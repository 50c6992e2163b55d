"""Mutated model files, as an attacker (or a bad disk) would make them; shared by the tests and the fuzz run.

``python tests/model/model_file_mutations.py DIR`` writes a valid model file and a few hundred
mutations of it into DIR, tries each with the Python loader, ``api.info`` and ``api.predict``
(with an output file, which must not appear), and prints one JSON line: the outcome counts,
the slowest case, every unexpected exception, and the growth of the peak resident memory.
"""

from __future__ import annotations

import json
import resource
import struct
import sys
import time
from pathlib import Path

import numpy as np


def valid_model(path: Path) -> Path:
    """A small segmentation MS-D with every metadata field filled in."""
    import torch

    from mixscale.model import ModelInfo, save_model
    from mixscale.nets import create_net

    torch.manual_seed(0)
    net = create_net("msd", depth=4, width=1, dilations=[1, 2], in_channels=1, out_channels=2).eval()
    info = ModelInfo(net_name="msd", net_config=net.config(), task="segmentation", class_names=["cell", "membrane"],
                     normalization={"mean": [0.5], "std": [2.0]}, train_config={"seed": 0},
                     train_data_sha256=["0" * 64])
    return save_model(path, net, info)


def split(path: Path) -> tuple[dict, bytes]:
    """(header dict, tensor bytes) of a safetensors file."""
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + size]), raw[8 + size:]


def join(header, data: bytes) -> bytes:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(text)) + text + data


def with_meta(header: dict, **changes) -> dict:
    """The header with fields of the mixscale metadata replaced (``None`` values are written as null)."""
    header = json.loads(json.dumps(header))
    meta = json.loads(header["__metadata__"]["mixscale"])
    meta.update(changes)
    header["__metadata__"]["mixscale"] = json.dumps(meta)
    return header


def with_net_config(header: dict, **changes) -> dict:
    meta = json.loads(header["__metadata__"]["mixscale"])
    return with_meta(header, net_config={**meta["net_config"], **changes})


def mutations(valid: Path, seed: int = 0):
    """Yield ``(name, bytes)`` of a few hundred malformed (or, by chance, still valid) files."""
    rng = np.random.default_rng(seed)
    raw = valid.read_bytes()
    header, data = split(valid)
    head_size = struct.unpack("<Q", raw[:8])[0]
    tensors = [k for k in header if k != "__metadata__"]
    for i in range(40):
        cut = int(rng.integers(0, len(raw)))
        yield f"truncated at {cut}", raw[:cut]
    for i in range(80):
        pos = int(rng.integers(8, 8 + head_size))
        flipped = bytearray(raw)
        flipped[pos] ^= int(rng.integers(1, 256))
        yield f"header byte {pos} flipped", bytes(flipped)
    for name in tensors[:10]:
        for offsets in ([0, len(data) + 16], [-4, 12], [8, 4], [len(data), len(data) + 4], "0,4"):
            h = json.loads(json.dumps(header))
            h[name]["data_offsets"] = offsets
            yield f"{name} offsets {offsets}", join(h, data)
    meta_fields = json.loads(header["__metadata__"]["mixscale"])
    for key in meta_fields:
        for value in ([], {}, "x", 1.5, None, True, -1, [1, 2], {"a": 1}):
            yield f"{key}={value!r}", join(with_meta(header, **{key: value}), data)
    yield "metadata is a list", join({**header, "__metadata__": {"mixscale": "[1, 2]"}}, data)
    yield "metadata not JSON", join({**header, "__metadata__": {"mixscale": "{nope"}}, data)
    yield "__metadata__ is a list", join({**header, "__metadata__": [1]}, data)
    yield "header is a list", join(b"[1, 2, 3]", data)
    yield f"{tensors[0]} entry is a list", join({**header, tensors[0]: [1, 2]}, data)
    yield "deeply nested header", join(b"[" * 100000 + b"]" * 100000, data)
    for key in ("depth", "width", "in_channels", "out_channels"):
        for value in (60000, 10 ** 6, 10 ** 9, 10 ** 18, -5, 0):  # 60000: under the schema's cap, over the file
            yield f"net_config.{key}={value}", join(with_net_config(header, **{key: value}), data)
    yield "dilations of 100000 entries", join(with_net_config(header, dilations=[1] * 100000), data)
    yield "unknown net argument", join(with_net_config(header, bogus=1), data)
    for name in tensors[:10]:
        h = {k: v for k, v in header.items() if k != name}
        yield f"missing {name}", join(h, data)
    for i in range(5):
        h = json.loads(json.dumps(header))
        h[f"extra.{i}"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
        yield f"extra tensor {i}", join(h, data)
    for name in tensors:
        if len(header[name]["shape"]) >= 2 and header[name]["shape"][0] != header[name]["shape"][1]:
            h = json.loads(json.dumps(header))
            h[name]["shape"] = list(reversed(h[name]["shape"]))
            yield f"{name} transposed", join(h, data)


def main(folder: str) -> None:
    import torch

    from mixscale import api
    from mixscale.model import InvalidModelFile, load_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    valid = valid_model(folder / "valid.safetensors")
    image = np.random.default_rng(0).normal(size=(24, 20)).astype(np.float32)
    api.predict(valid, image)  # warm up torch before measuring
    load_model(valid)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counts = {"invalid": 0, "valid": 0, "refused_use": 0}
    unexpected, slowest = [], (0.0, "")
    for i, (name, blob) in enumerate(mutations(valid)):
        path = folder / f"case_{i}.safetensors"
        path.write_bytes(blob)
        out = folder / f"case_{i}.tif"
        for what, call in (("load", lambda: load_model(path)), ("info", lambda: api.info(str(path))),
                           ("predict", lambda: api.predict(path, image, out))):
            t0 = time.perf_counter()
            try:
                call()
                counts["valid"] += 1
            except InvalidModelFile:
                counts["invalid"] += 1
                if out.exists():
                    unexpected.append(f"{name}: {what} wrote {out.name} from an invalid file")
            except ValueError as exc:  # a valid file of another kind, refused by predict with a use error
                if what == "predict" and "is a detection model" in str(exc):
                    counts["refused_use"] += 1
                else:
                    unexpected.append(f"{name}: {what} raised {type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001 - the point is to see every other kind
                unexpected.append(f"{name}: {what} raised {type(exc).__name__}: {str(exc)[:200]}")
            seconds = time.perf_counter() - t0
            slowest = max(slowest, (seconds, f"{name} ({what})"))
        out.unlink(missing_ok=True)
        path.unlink()
        del blob
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps({"cases": i + 1, "counts": counts, "unexpected": unexpected, "slowest_s": slowest[0],
                      "slowest": slowest[1], "peak_rss_growth_mb": growth_mb, "torch": torch.__version__}))


if __name__ == "__main__":
    main(sys.argv[1])
