"""Typed configs: YAML + dotted overrides, unknown keys and wrong types rejected by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from pipeline.config import ConfigError, apply_overrides, flatten, load, to_dict


@dataclass(frozen=True)
class Optim:
    lr_g: float = 2e-4
    betas: tuple[float, ...] = (0.5, 0.999)


@dataclass(frozen=True)
class Example:
    model: Literal["dcgan", "acgan"] = "dcgan"
    epochs: int = 5
    attrs: tuple[str, ...] = ()
    limit: int | None = None
    train: Optim = field(default_factory=Optim)


def test_yaml_plus_overrides(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("model: acgan\ntrain:\n  lr_g: 1.0e-3\n")
    config = load(Example, file, ["train.lr_g=2e-4", "attrs=[Male,Smiling]", "limit=10"])
    assert config.model == "acgan" and config.train.lr_g == 2e-4
    assert config.attrs == ("Male", "Smiling") and config.limit == 10
    assert flatten(to_dict(config))["train.betas"] == [0.5, 0.999]


@pytest.mark.parametrize(
    "override, message",
    [
        (["train.lr_d=1"], "unknown key train.lr_d"),
        (["epochs=many"], "epochs must be an integer"),
        (["model=gan"], "choose one of: dcgan, acgan"),
        (["epochs"], "must look like key.sub=value"),
        (["train.lr_g=true"], "train.lr_g must be a number"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load(Example, None, override)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(Example, tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load(Example, tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(Example, tmp_path / "broken.yaml")


def test_overrides_do_not_touch_the_input():
    base = {"train": {"lr_g": 1}}
    apply_overrides(base, ["train.lr_g=2"])
    assert base == {"train": {"lr_g": 1}}


@pytest.mark.parametrize("name", ["../x", "/etc/cron.d/x", "a/b", ".hidden", ""])
def test_a_run_name_is_a_plain_folder_name(name):
    """--set run_name names the run's folder under the runs location: never a path."""
    from pipeline.training.config import load_train_config

    with pytest.raises(ConfigError, match=r"is not a run name"):
        load_train_config("dcgan", overrides=[f"run_name={name}"])
    assert load_train_config("dcgan", overrides=["run_name=lam-0.5_v2"]).run_name == "lam-0.5_v2"
