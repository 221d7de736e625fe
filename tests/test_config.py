"""RunConfig: pyproject defaults, unknown keys and bad values named, TOML types coerced."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cbp_fed.config import RunConfig
from cbp_fed.tasks import task_names

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_defaults_are_the_dataclass_defaults():
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert table == RunConfig().to_run_config()
    assert RunConfig.from_run_config(table) == RunConfig()


def test_unknown_key_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown run config key 'pop-size'; did you mean 'popsize'\? known keys"):
        RunConfig.from_run_config({"pop-size": 4})


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("popsize", 1, "'popsize' = 1: must be >= 2"),
        ("method", "lora", "choose from"),
        ("sigma0", -1.0, "must be > 0"),
        ("subspace", -1, "'subspace' = -1: must be >= 0"),
        ("popsize", "10", "must be int"),
        ("diagonal", 1, "must be bool"),
        ("tasks", " , ", "name at least one task"),
    ],
)
def test_bad_values_are_named(key, value, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_run_config({key: value})


def test_a_subspace_is_for_cbp_only():
    assert RunConfig.from_run_config({"subspace": 3}).subspace == 3
    with pytest.raises(ValueError, match="'subspace' = 3: .* for method = 'cbp' only"):
        RunConfig.from_run_config({"subspace": 3, "method": "bbt"})


def test_ints_are_accepted_for_float_keys():
    assert RunConfig.from_run_config({"sigma0": 2}).sigma0 == 2.0


@pytest.mark.parametrize("preset", sorted((ROOT / "simulations").glob("*.toml")), ids=lambda p: p.name)
def test_every_preset_is_a_valid_run_config(preset):
    """Presets are run-config files: a typo in one would only show when someone runs it. A scale preset's task
    file is written on first use, as `local_run` does before a run (`scale_task.resolve`)."""
    from simulations.scale_task import resolve

    config = RunConfig.from_run_config(resolve(tomllib.loads(preset.read_text())))
    for task in config.task_list:
        assert task in task_names() or (ROOT / task).is_file(), task
