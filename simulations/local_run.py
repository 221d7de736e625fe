"""Run the app with `flwr run .` on a local simulation SuperLink, check its status, stop what it started.

    python -m simulations.local_run [--users N] [--config simulations/scale-300.toml] [--set "key=value ..."]
    python -m simulations.local_run --config PRESET --set "resume-from='/abs/results/RUN'"  # continue a killed run

Results go to results/<preset run-name or "default">-<timestamp>/ and are printed as a table; the peak
memory of the run's Flower and Ray processes goes to local_run.json beside them. Each run gets its own
SuperLink port and its own FLWR_HOME (``<home>/superlink-<port>``: the connection's config.toml with its
number of SuperNodes, the SuperLink's database and log), so runs started at the same time (from this
checkout, other checkouts, tests) neither meet, stop nor reconfigure each other; Ray is per run too (each
simulation starts its own local Ray unless RAY_ADDRESS names a cluster).

`flwr run` starts a background `flower-superlink --simulation` that outlives the command and exits 0
even when the run failed (docs/flower.md). This wrapper sets the environment first (no runtime
dependency installation, no telemetry, FLWR_HOME inside the repo), streams the run, reads the run's
real status with `flwr list --format json`, and stops the SuperLink it started, by PID. It exits 1
unless the status is `finished:completed`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import IO

from simulations.monitor import PeakMemory

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_USERS = 4
"""Simulated SuperNodes unless --users or the preset's min-users asks for more."""
RUN_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # Ray passes an argument or result over 100 KB through its shared-memory object store instead of in
    # the call itself: about 8 ms of CPU per ClientApp call instead of 2 here, and every call carries the
    # user's context (its optimiser state, ~0.1 MB at r = 500) both ways. Inline up to 1 MB.
    "RAY_max_direct_call_object_size": str(1 << 20),
}


def environment(flwr_home: Path, users: int, cpus_per_user: int = 1) -> dict[str, str]:
    """Environment for `flwr`: the venv's bin on PATH and a FLWR_HOME whose local connection
    simulates ``users`` SuperNodes."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'
        f"options.num-supernodes = {users}\noptions.backend.client-resources.num-cpus = {cpus_per_user}\n"
    )
    env = {**os.environ, **RUN_ENV, "FLWR_HOME": str(flwr_home)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def private_superlink(env: dict[str, str], port: int | None = None) -> int:
    """Give this run's local SuperLink its own ports, so that `flwr run` neither reuses nor collides with
    another local simulation on the default 39091 (e.g. a test running at the same time); returns its port."""
    port = port or free_port()
    env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"] = str(port)
    env["FLWR_LOCAL_CONTROL_API_PORT"] = str(free_port())
    return port


def superlinks(port: int | None = None) -> set[int]:
    """PIDs of local simulation SuperLinks (a deployment's SuperLink running beside is not ours), only the
    one listening on ``port`` when given."""
    pattern = "flower-superlink.*--simulation" + (f".*--port {port}( |$)" if port else "")
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return {int(pid) for pid in out.split()}


def stop(pids: set[int]) -> None:
    """SIGTERM, then SIGKILL what is left after 10 s."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    while time.time() < deadline and pids & superlinks():
        time.sleep(0.5)
    for pid in pids & superlinks():
        os.kill(pid, signal.SIGKILL)


def _toml(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, str) else str(value)


def run_config_string(settings: dict) -> str:
    """`--run-config` string of a dict of run-config keys."""
    return " ".join(f"{key}={_toml(value)}" for key, value in settings.items())


def parse_settings(text: str) -> dict:
    """``"num-rounds=2 tasks='sst2'"`` -> dict (values without spaces)."""
    return tomllib.loads("\n".join(text.split())) if text.strip() else {}


def flwr_run(
    users: int,
    run_config: str = "",
    flwr_home: Path | None = None,
    timeout: float = 3600,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    output: IO | None = None,
) -> dict:
    """Run the app once; returns the run's entry of `flwr list` (its "status" says how it ended).

    ``flwr_home``: where this run's own FLWR_HOME is made (``run_home``; default .state/flwr), removed after
    a completed run; ``port``: the local SuperLink's port (default: a free one); ``extra_env``: more
    environment for `flwr` and the SuperLink it starts (e.g. RAY_ADDRESS to run on an existing Ray
    cluster); ``output``: a file for the run's streamed log (default: this process's stdout).
    """
    port = port or free_port()
    home = run_home(flwr_home or ROOT / ".state" / "flwr", port)
    env = {**environment(home, users), **(extra_env or {})}
    private_superlink(env, port)
    command = ["flwr", "run", str(ROOT), "--stream"] + (["--run-config", run_config] if run_config else [])
    run = {"status": "not-started"}
    try:
        submitted = subprocess.run(
            command, env=env, cwd=ROOT, timeout=timeout, check=False, stdout=output, stderr=output
        )
        runs = list_runs(env)
        if not runs:  # refused before it started
            run = {"status": f"not-started: `flwr run` exited {submitted.returncode} without creating a run"}
        else:
            run = max(runs, key=lambda r: r["pending-at"])
        return run
    finally:
        stop(superlinks(port))
        if run["status"] == "finished:completed":  # a failed run's SuperLink log stays for a look
            shutil.rmtree(home, ignore_errors=True)


def run_home(flwr_home: Path, port: int) -> Path:
    """The FLWR_HOME of the run whose SuperLink listens on ``port``: a fresh folder under ``flwr_home``, so
    that concurrent runs never share its config.toml (the number of SuperNodes) or the SuperLink database."""
    home = flwr_home / f"superlink-{port}"
    shutil.rmtree(home, ignore_errors=True)
    return home


def list_runs(env: dict[str, str]) -> list[dict]:
    """The runs the local SuperLink of ``env`` knows (`flwr list`; starts that SuperLink if needed)."""
    listing = subprocess.run(
        ["flwr", "list", "--format", "json"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    return json.loads(listing.stdout).get("runs", []) if listing.stdout.strip() else []


def simulate(
    settings: dict, users: int, folder: Path, timeout: float = 3600, port: int | None = None, **flwr_args
) -> dict:
    """One run with ``settings`` (run-config keys) and ``users`` SuperNodes, its peak memory measured.

    Returns the facts also written to ``folder/local_run.json`` (when the run made its folder): run id,
    status, elapsed seconds and the peak resident memory of this run's processes (its SuperLink's tree:
    SuperExec, the ServerApp's simulation process, Ray and the ClientApp actors; not other runs').
    ``port``: its SuperLink's (default: a free one); ``flwr_args`` go to ``flwr_run`` (flwr_home, extra_env,
    output).
    """
    port = port or free_port()
    with PeakMemory(roots=lambda: superlinks(port)) as peak:
        run = flwr_run(users, run_config_string(settings), timeout=timeout, port=port, **flwr_args)
    facts = {**{k: run.get(k) for k in ("run-id", "status", "elapsed")}, "peak_rss_gib": round(peak.bytes / 2**30, 2)}
    if folder.is_dir():
        (folder / "local_run.json").write_text(json.dumps(facts, indent=2) + "\n")
    return facts


def print_rounds(folder: Path) -> None:
    """The run's rounds as a table: users, loss, test accuracy (first the users' start vectors), the test
    accuracy of the users' best option of their own (majority, zero-shot, calibrations: the best non-CBP
    baseline, in hindsight on test) and of what the protecting users end on (with the share that end on an
    option of their own), mean dev accuracy of the z kept before the round and of the one kept after it,
    bytes per user, seconds."""
    from rich.table import Table

    from cbp_fed.console import make_console

    table = Table(
        "round",
        "users ok",
        "failed",
        "train loss",
        "test acc",
        "best own option",
        "protected (own share)",
        "users below own start",
        "dev acc: kept before -> now",
        "up KB/user",
        "down KB/user",
        "seconds",
        title=str(folder),
    )
    rounds = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    if rounds and rounds[0].get("start_test_accuracy") is not None:  # every user's start vector, before round 1
        table.add_row(
            "start",
            str(rounds[0]["start_users"]),
            "",
            "",
            f"{rounds[0]['start_test_accuracy']:.3f}",
            *[""] * 7,
        )
    for r in rounds:
        acc = r.get("test_accuracy")
        table.add_row(
            str(r["round"]),
            str(r["users_ok"]),
            str(r["users_failed"]),
            f"{r.get('train_loss', 0):.3f}",
            "-" if acc is None else f"{acc:.3f} ± {r['test_accuracy_std']:.3f}",
            f"{r['own_best_test_accuracy']:.3f}" if "own_best_test_accuracy" in r else "-",
            f"{r['protected_test_accuracy']:.3f} ({r['protected_own_share']:.2f})" if "protected_users" in r else "-",
            f"{len(r['end_below_start'])} of {r['users_evaluated']}" if "end_below_start" in r else "-",
            f"{r['dev_accuracy_before']:.3f} -> {r['dev_accuracy']:.3f}" if "dev_accuracy" in r else "-",
            f"{r['bytes_up_per_user'] / 1024:.1f}",
            f"{r['bytes_down_per_user'] / 1024:.1f}",
            f"{r['seconds']:.0f}",
        )
    make_console().print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=DEFAULT_USERS, help="simulated SuperNodes")
    parser.add_argument("--config", type=Path, help="a preset TOML of run-config keys (simulations/*.toml)")
    parser.add_argument("--set", default="", help='extra run-config, e.g. "num-rounds=2 seed=1"')
    args = parser.parse_args()
    settings = tomllib.loads(args.config.read_text()) if args.config else {}
    name = f"{settings.get('run-name', 'default')}-{time.strftime('%Y%m%d-%H%M%S')}"
    results = ROOT / "results"
    settings.update({"results-dir": str(results), "run-name": name}, **parse_settings(args.set))
    # where the run writes (--set may name another results-dir or run-name)
    folder = Path(settings.get("resume-from") or Path(settings["results-dir"]) / settings["run-name"])
    users = max(args.users, settings.get("min-users", 0))
    try:
        settings = prepare(settings, users)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    facts = simulate(settings, users, folder)
    print(json.dumps(facts))
    if facts["status"] != "finished:completed":
        print(f"error: the run did not complete: {facts['status']}", file=sys.stderr)
        return 1
    print_rounds(folder)
    return 0


def prepare(settings: dict, users: int) -> dict:
    """The pre-start check of a run: ``settings`` with the data they name made ready (the scale task written
    on first use, by absolute path), after `check_settings` found nothing Flower would refuse."""
    from simulations.scale_task import resolve

    settings = resolve(settings)
    check_settings(settings, users)
    return settings


def check_settings(settings: dict, users: int) -> None:
    """Refuse, before Flower starts, what the ServerApp would refuse: an unknown key or a bad value (named,
    with the allowed ones), a subspace wider than the generator's SDT task vectors, and users that cannot all
    train and test (with the numbers)."""
    from cbp_fed.config import RunConfig
    from cbp_fed.tasks import check_run_splits

    defaults = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    config = RunConfig.from_run_config({**defaults, **settings})
    generator = Path(config.generator) if config.generator else None
    if generator and not (generator.is_absolute() or generator.exists()):
        generator = ROOT / generator
    if generator and not (generator / "generator.json").exists():
        raise FileNotFoundError(
            f"run config 'generator' = {config.generator!r}: no generator.json there; train one with "
            f"`cbp-fed sdt --domain {config.domain} --out {config.generator}`, or set generator='' to train at start"
        )
    if generator and config.subspace:
        tasks = len(json.loads((generator / "generator.json").read_text())["sdt_tasks"])
        if config.subspace > tasks:
            raise ValueError(
                f"run config 'subspace' = {config.subspace}: the generator {config.generator!r} has {tasks} SDT task "
                f"vectors to span it; choose subspace <= {tasks}"
            )
    if not config.resume_from:
        check_run_splits(config, users)


if __name__ == "__main__":
    sys.exit(main())
