"""init_from: a run that starts from the weights of a model file (the plugin's Continue training)."""

import numpy as np
import pytest
import torch

from mixscale import api
from mixscale.model import load_model
from mixscale.train import build_run


def test_the_run_starts_from_the_file_weights(tmp_path, tiny_config):
    first = api.train(tiny_config)
    net, _ = load_model(first.model_path)
    cfg = {**tiny_config, "run_dir": str(tmp_path / "again"), "init_from": str(first.model_path)}
    from mixscale.config import validate_config

    run = build_run(validate_config(cfg))
    theirs, ours = net.state_dict(), run.module.net.state_dict()
    assert theirs.keys() == ours.keys()
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=0)
    fresh = build_run(validate_config({**tiny_config, "run_dir": str(tmp_path / "fresh")}))
    assert any(not torch.equal(fresh.module.net.state_dict()[k], theirs[k]) for k in theirs)


def test_another_network_or_no_file_is_refused(tmp_path, tiny_config):
    first = api.train(tiny_config)
    other = {**tiny_config, "run_dir": str(tmp_path / "b"), "init_from": str(first.model_path),
             "net": {"name": "msd", "depth": 5, "dilations": [1, 2, 3]}}
    with pytest.raises(ValueError, match=r"init_from='.*model.safetensors' holds network 'msd' with other settings "
                                         r"than this run's 'msd' \(differing: \['depth'\]\)"):
        api.train(other)
    with pytest.raises(ValueError, match=r"init_from='nope.safetensors' is not a file"):
        api.train({**tiny_config, "run_dir": str(tmp_path / "c"), "init_from": "nope.safetensors"})
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    assert np.isfinite(first.best_val_loss)
