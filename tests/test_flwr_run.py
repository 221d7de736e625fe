"""A real `flwr run .` simulation (Ray backend, tiny backbone): status, run folder, an injected crash
that the round survives and the user recovers from, no process left."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from cbp_fed.backbone import FrozenLM
from cbp_fed.privacy.attacks.common import ground_truth, provider_blackbox, run_config_of
from cbp_fed.privacy.transcript import Transcript
from cbp_fed.service import Query
from simulations.local_run import ROOT, flwr_run, free_port, private_superlink, stop, superlinks


def transcript_accuracy(folder: Path, server_round: int) -> float:
    """The users' mean test accuracy in a round, recomputed from the scores the provider returned (its
    transcript) and the users' test labels (the evaluator's ground truth)."""
    transcript = Transcript(folder)
    truth = ground_truth(run_config_of(transcript), transcript.users())
    accuracies = []
    for p in transcript.users():
        (view,) = [v for v in transcript.rounds(p) if v.round == server_round]
        labels = [truth[p].test[sha] for sha in view.eval_hashes]
        accuracies.append(float((view.eval_scores.argmax(1) == labels).mean()))
    return float(np.mean(accuracies))


def start_accuracy(folder: Path) -> float:
    """The users' mean test accuracy at round 1's start vector, scored here through the run's own generator."""
    transcript = Transcript(folder)
    config = run_config_of(transcript)
    truth = ground_truth(config, transcript.users())
    box = provider_blackbox(config, FrozenLM.load("tiny-random"), folder)
    accuracies = []
    for p in transcript.users():
        view = transcript.rounds(p)[0]
        passages, queries = zip(*(transcript.text(p, sha) for sha in view.eval_hashes))
        (scores,) = box.score([Query(view.z_start[None], passages, queries, view.label_words)])
        labels = [truth[p].test[sha] for sha in view.eval_hashes]
        accuracies.append(float((scores[0].argmax(1) == labels).mean()))
    return float(np.mean(accuracies))


@pytest.mark.slow
def test_flwr_run_completes_and_writes_the_run_folder(tmp_path):
    port = free_port()
    settings = (
        f"backbone='tiny-random' sdt-steps=3 r=16 m=8 t=2 popsize=4 steps-per-round=2 num-rounds=2 "
        f"tasks='sst2' n-test=12 shots-per-class=3 min-users=3 results-dir='{tmp_path}' run-name='it' "
        "inject-faults='crash:1@1' record-transcript=true"
    )
    run = flwr_run(users=3, run_config=settings, flwr_home=tmp_path / "flwr", timeout=600, port=port)
    assert run["status"] == "finished:completed", run
    assert not superlinks(port)  # the SuperLink it started is stopped (other runs may go on beside it)

    folder = tmp_path / "it"
    config = json.loads((folder / "config.json").read_text())
    assert config["backbone"] == "tiny-random" and config["popsize"] == 4
    rounds = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[0]["start_users"] == 3  # evaluated before any training
    assert rounds[0]["start_test_accuracy"] == pytest.approx(start_accuracy(folder))
    assert [r["users_ok"] for r in rounds] == [2, 3]  # user 1 crashed in round 1 and came back in round 2
    (failure,) = rounds[0]["failures"]
    assert failure["stage"] == "train.finish" and "crashed (injected)" in failure["reason"]
    assert rounds[1]["failures"] == []
    for record in rounds:
        assert record["users_evaluated"] == 3
        assert record["test_accuracy"] == pytest.approx(transcript_accuracy(folder, record["round"]))
        users = record["bytes"]["users"]
        assert sorted(users) == ["0", "1", "2"]  # keyed by partition id
        for pid, user in users.items():
            if record["round"] == 1 and pid == "1":
                assert user["up"]["train.finish"]["errors"] == 1  # it crashed: Flower replied an error for it
                continue
            assert user["up"]["train.begin"]["payload_bytes"] > user["up"]["train.finish"]["payload_bytes"]  # texts
            assert set(user["down"]) == {
                "train.begin",
                "train.step",
                "train.select",
                "train.finish",
                "evaluate.query",
                "evaluate.score",
            }
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["users"] == 3
    assert (folder / "generator" / "generator.safetensors").exists()
    for plot in ("accuracy.png", "bytes.png"):
        assert (folder / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_uv_resolves_every_dependency_to_the_installed_environment():
    """Flower's runtime installer runs `uv sync` on pyproject's dependencies: [tool.uv] must override each
    one (else uv installs a second torch, a CUDA build, beside the one `make setup` installed)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {re.split(r"[\s\[<>=!~;@]", dep, maxsplit=1)[0] for dep in project["project"]["dependencies"]}
    overridden = {re.split(r"[\s;]", dep, maxsplit=1)[0] for dep in project["tool"]["uv"]["override-dependencies"]}
    assert declared == overridden


@pytest.mark.slow
def test_plain_flwr_run_uses_the_installed_torch(tmp_path):
    """`flwr run .` as a Flower user types it: a fresh FLWR_HOME, Flower's runtime dependency installation
    on (no FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION), the default local connection."""
    import torch

    env = {k: v for k, v in os.environ.items() if k != "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"}
    env.update(FLWR_HOME=str(tmp_path / "flwr"), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    port = private_superlink(env)
    settings = (
        "backbone='tiny-random' sdt-steps=2 r=16 m=8 t=2 popsize=4 steps-per-round=1 num-rounds=1 tasks='sst2' "
        f"n-test=12 shots-per-class=3 min-users=2 results-dir='{tmp_path}' run-name='plain'"
    )
    try:
        streamed = subprocess.run(
            ["flwr", "run", ".", "--stream", "--run-config", settings],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        listing = subprocess.run(
            ["flwr", "list", "--format", "json"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
    finally:
        stop(superlinks(port))
    log = streamed.stdout + streamed.stderr
    (run,) = json.loads(listing.stdout)["runs"]
    assert run["status"] == "finished:completed", log[-3000:]
    assert "App dependencies installed successfully via uv sync" in log  # the installer ran ...
    assert "No additional application dependencies needed installation" in log  # ... and installed nothing
    ran_on = json.loads((tmp_path / "plain" / "environment.json").read_text())
    assert ran_on["torch"] == torch.__version__
    assert ran_on["torch_path"] == str(Path(torch.__file__).parent)
    assert not list((tmp_path / "flwr").rglob("nvidia*"))  # no CUDA wheels anywhere in FLWR_HOME


def local_run(settings: str, timeout: float) -> subprocess.CompletedProcess:
    """`python -m simulations.local_run --users 2 --set SETTINGS`, as `make demo` runs it."""
    command = [sys.executable, "-m", "simulations.local_run", "--users", "2", "--set", settings]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("backbone='tiny-random' num-round=1", "unknown run config key 'num-round'; did you mean 'num-rounds'?"),
        ("backbone='tiny-random' popsize='six'", "run config 'popsize' must be int, got str 'six'"),
        ("backbone='tiny-random' num-rounds=0", "run config 'num-rounds' = 0: must be >= 1"),
        ("backbone='tiny-random' tasks='sst2' shots-per-class=5000", "have no test row left"),
        ("backbone='tiny-random' generator='results/none'", "'generator' = 'results/none': no generator.json there"),
        ("generator='results/sdt/gen-finance-smollm2' subspace=4", "has 3 SDT task vectors to span it"),
    ],
)
def test_local_run_refuses_bad_settings_before_flower_starts(settings, message):
    done = local_run(settings, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert "Starting local SuperLink" not in done.stdout + done.stderr


@pytest.mark.slow
def test_a_run_flower_refuses_reports_that_not_an_earlier_runs_status(tmp_path):
    home = tmp_path / "flwr"
    settings = (
        "backbone='tiny-random' sdt-steps=2 r=16 m=8 t=2 popsize=4 steps-per-round=1 num-rounds=1 tasks='sst2' "
        f"n-test=12 shots-per-class=3 min-users=2 results-dir='{tmp_path}' run-name='first'"
    )
    assert flwr_run(users=2, run_config=settings, flwr_home=home, timeout=600)["status"] == "finished:completed"
    refused = flwr_run(users=2, run_config="num-round=1", flwr_home=home, timeout=600)  # Flower refuses the key
    assert refused["status"].startswith("not-started")


@pytest.mark.slow
def test_local_run_exits_nonzero_with_the_status_when_the_run_fails(tmp_path):
    """A failure inside the run (the ServerApp refuses to resume from a folder that is not a run's): the
    wrapper, and so `make demo`, exits 1 and says how the run ended instead of printing a table."""
    settings = f"backbone='tiny-random' tasks='sst2' n-test=12 shots-per-class=3 resume-from='{tmp_path}'"
    done = local_run(settings, timeout=600)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "error: the run did not complete: finished:failed" in done.stderr


@pytest.mark.slow
def test_two_runs_at_once_from_one_flwr_home_keep_their_own_users(tmp_path):
    """Two `flwr run`s started together under one FLWR_HOME root (two local_run invocations from one
    checkout): each gets its own SuperLink, connection config and database, so each completes with the
    number of users it asked for, and neither leaves its SuperLink behind."""
    from concurrent.futures import ThreadPoolExecutor

    base = (
        "backbone='tiny-random' sdt-steps=2 r=16 m=8 t=2 popsize=4 steps-per-round=1 num-rounds=1 tasks='sst2' "
        f"n-test=12 shots-per-class=3 results-dir='{tmp_path}'"
    )
    ports = [free_port(), free_port()]
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(
                flwr_run,
                users=users,
                run_config=f"{base} min-users={users} run-name='run-{users}'",
                flwr_home=tmp_path / "flwr",
                timeout=600,
                port=port,
            )
            for users, port in zip((2, 3), ports)
        ]
        runs = [f.result() for f in futures]
    assert [r["status"] for r in runs] == ["finished:completed"] * 2, runs
    for users in (2, 3):
        (record,) = [json.loads(line) for line in (tmp_path / f"run-{users}" / "rounds.jsonl").read_text().splitlines()]
        assert record["users_sampled"] == users and record["users_ok"] == users
    assert not any(superlinks(port) for port in ports)
    assert not list((tmp_path / "flwr").glob("superlink-*"))  # completed runs leave no FLWR_HOME behind
