"""Config: validation errors name the key, overrides, defaults agree with constructors."""

import inspect

import pytest
import yaml

from mixscale.config import AugmentConfig, ConfigError, DataConfig, apply_overrides, dump_config, load_config


def _raw(tmp_path):
    return {"version": 1, "run_dir": str(tmp_path / "run"),
            "data": {"train_images": "a.tif", "train_labels": "b.tif", "num_classes": 3},
            "net": {"name": "msd", "depth": 5}}


def _write(tmp_path, raw):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_valid_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(_write(tmp_path, _raw(tmp_path)))
    assert cfg.net.kwargs() == {"depth": 5} and cfg.loss_spec() == "ce"
    again = load_config(_write(tmp_path, yaml.safe_load(dump_config(cfg))))
    assert again == cfg


@pytest.mark.parametrize("patch, match", [
    ({"data": {"train_image": "x"}}, r"data.train_image: unknown key"),
    ({"trainer": {"max_epochs": "many"}}, r"trainer.max_epochs: .*integer.*'many'"),
    ({"optim": {"name": "adamm"}}, r"optim.name: .*'adamm'"),
    ({"version": 7}, r"version 7 is not supported"),
    ({"data": {"patch_shape": [64]}}, r"patch_shape=\[64\] must have spatial_dims=2"),
    ({"task": "classification"}, r"task: .*'classification'"),
])
def test_errors_name_the_key(tmp_path, patch, match):
    raw = _raw(tmp_path)
    for k, v in patch.items():
        if isinstance(v, dict):
            raw.setdefault(k, {}).update(v)
        else:
            raw[k] = v
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, raw))


def test_segmentation_needs_num_classes(tmp_path):
    raw = _raw(tmp_path)
    del raw["data"]["num_classes"]
    with pytest.raises(ConfigError, match="num_classes is required"):
        load_config(_write(tmp_path, raw))


def test_overrides_set_nested_values_with_yaml_types(tmp_path):
    cfg = load_config(_write(tmp_path, _raw(tmp_path)),
                      ["trainer.max_epochs=3", "net.width=2", "data.patch_shape=[32, 48]", "loss={ce: 1, dice: 0.5}"])
    assert cfg.trainer.max_epochs == 3 and cfg.net.kwargs()["width"] == 2
    assert cfg.data.patch_shape == [32, 48] and cfg.loss == {"ce": 1.0, "dice": 0.5}
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        apply_overrides({}, ["trainer.max_epochs"])


def test_yaml_tags_never_execute(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text(f"version: !!python/object/apply:os.system ['touch {tmp_path / 'pwned'}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    assert not (tmp_path / "pwned").exists()


def test_config_defaults_agree_with_constructors():
    from mixscale.data import Augmentation, PatchSampler

    sig = inspect.signature(Augmentation.__init__).parameters
    for name, field in AugmentConfig.model_fields.items():
        default = field.default
        assert sig[name].default == (tuple(default) if isinstance(default, list) else default), name
    sampler = inspect.signature(PatchSampler.__init__).parameters
    assert DataConfig.model_fields["label_fraction"].default == sampler["label_fraction"].default
    assert DataConfig.model_fields["ignore_index"].default == sampler["ignore_index"].default
