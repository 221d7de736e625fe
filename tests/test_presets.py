"""Every committed preset starts as written: `simulations.local_run`'s pre-start check passes on it.

A preset that names too little data for its users, a generator that is not committed or a key the
ServerApp refuses fails here, not in front of a user who copied its command from the README.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

from simulations.local_run import DEFAULT_USERS, ROOT, prepare

PRESETS = sorted((ROOT / "simulations").glob("*.toml"))
HUB_ONLY = {"finance-hub": "its users' task is a hub dataset (Financial PhraseBank): it needs a network"}
OFFLINE = [preset for preset in PRESETS if preset.stem not in HUB_ONLY]


def test_the_presets_are_found():
    assert {"scale-300", "scale-1000", "scale-10000", "faults", "medical"} <= {p.stem for p in PRESETS}
    assert set(HUB_ONLY) <= {p.stem for p in PRESETS}  # a renamed hub preset must not slip into the check


@pytest.mark.parametrize("preset", OFFLINE, ids=lambda path: path.stem)
def test_every_preset_passes_the_pre_start_data_check_as_written(preset):
    settings = tomllib.loads(preset.read_text())
    users = max(DEFAULT_USERS, settings.get("min-users", 0))  # what `local_run --config PRESET` simulates
    ready = prepare(settings, users)
    for task in ready.get("tasks", "").split(","):
        assert not task.startswith(".state"), "a generated task must reach the apps by its absolute path"


def test_scripts_find_what_make_setup_made_unless_told_otherwise():
    """`python -m simulations.<script>` without make reads the repository's cache (the data wheels a preset's
    users need are there), and a CBP_FED_CACHE the user set wins."""
    show = [sys.executable, "-c", "import os, simulations; print(os.environ['CBP_FED_CACHE'])"]
    bare = {key: value for key, value in os.environ.items() if key != "CBP_FED_CACHE"}
    told = {**bare, "CBP_FED_CACHE": "/elsewhere"}
    cache = [
        subprocess.run(show, env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        for env in (bare, told)
    ]
    assert cache == [str(ROOT / ".state" / "cache"), "/elsewhere"]
