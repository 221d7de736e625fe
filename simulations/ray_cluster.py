"""The simulation on an existing Ray cluster: a head node and a second node started with `ray start`.

    python -m simulations.ray_cluster [--users 4] [--user-cpus 2]
    python -m simulations.ray_cluster --users 1000 --config simulations/scale-1000.toml   # at scale

What it does, on loopback (the same commands work across machines with real addresses):

1. the head node, where the provider lives: the SuperLink and the ServerApp with the model and its
   BlackBox run on this machine (on a GPU machine add ``--num-gpus 1``). ``--num-cpus 0`` keeps Ray from
   scheduling ClientApp actors here, and the custom resource ``provider`` marks the node:

       ray start --head --block --node-ip-address 127.0.0.1 --port GCS --num-cpus 0 \\
           --resources '{"provider": 1}' --include-dashboard false --temp-dir DIR

2. a second node for the users: every ClientApp actor takes 1 CPU, so they all run here:

       ray start --block --address 127.0.0.1:GCS --num-cpus 2 --resources '{"users": 2}' --temp-dir DIR

3. the app pointed at the cluster: Flower's Ray backend calls ``ray.init()`` without an address, which
   joins the cluster that ``RAY_ADDRESS`` names instead of starting its own Ray. RAY_ADDRESS must be in
   the environment of the SuperLink that ``flwr run`` starts (it passes it on to the simulation):

       RAY_ADDRESS=127.0.0.1:GCS flwr run . --run-config "backbone='tiny-random' ..."

4. while the run lasts, the ClientApp actors' processes are sampled and counted per node (an actor's
   process descends from its node's raylet, which descends from that node's ``ray start --block``);
   the run must finish as ``finished:completed`` with all its actors on the users' node.
5. finally the two ``ray start --block`` processes get SIGTERM (each stops its node) and anything left
   under this cluster's private temp dir is killed by PID. Never ``ray stop``: it stops every Ray on
   the machine, other jobs' included. The private temp dir also keeps other jobs' ``ray.init()`` from
   joining this cluster (Ray looks for the latest cluster in its default temp dir).

With ``--config`` the run uses a preset instead of the small default run (a scale preset names the
scale task, ``simulations/scale_task.py``, written on first use), and the summary adds each round's seconds, BlackBox
seconds and framework ms per user: the same numbers as a single-machine run of that preset.

Exits 0 when the run completed with every actor on the users' node; prints a JSON summary (also
written to ``.state/ray-cluster/summary.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import psutil

from simulations.local_run import ROOT, RUN_ENV, flwr_run, free_port, run_config_string
from simulations.profile_round import framework_ms_per_user

SMALL_RUN = {
    "backbone": "tiny-random",
    "tasks": "sst2",
    "sdt-steps": 3,
    "r": 16,
    "m": 8,
    "t": 2,
    "popsize": 4,
    "steps-per-round": 2,
    "num-rounds": 1,
    "shots-per-class": 2,
    "n-test": 4,
}
"""The default run: 1 round of a tiny-backbone SST-2 federation, enough to see where the actors run."""


def run_settings(preset: Path | None, users: int, results: Path) -> dict:
    """Run-config keys of the cluster's run: ``preset``'s (its data made ready: the scale task written on
    first use) or ``SMALL_RUN``."""
    from simulations.scale_task import resolve

    settings = resolve(tomllib.loads(preset.read_text())) if preset else dict(SMALL_RUN)
    return settings | {"min-users": users, "results-dir": str(results), "run-name": "ray-cluster"}


def round_lines(folder: Path, users: int) -> list[dict]:
    """Each finished round of the run in ``folder``: users ok, seconds, BlackBox seconds, framework ms per user."""
    path = folder / "rounds.jsonl"
    rounds = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [
        {
            "round": r["round"],
            "users_ok": r["users_ok"],
            "seconds": r["seconds"],
            "forward_seconds": r["forward_seconds"],
            "framework_ms_per_user": framework_ms_per_user(r, users),
        }
        for r in rounds
    ]


def ray_command(*args: str) -> list[str]:
    """The venv's ``ray`` CLI with ``args``."""
    return [str(Path(sys.executable).parent / "ray"), *args]


def start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``ray start --block ...`` in the background (its log in ``log``); it stops its node on SIGTERM."""
    with log.open("w") as out:
        return subprocess.Popen(ray_command("start", "--block", *args), env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_nodes(address: str, expected: int, env: dict[str, str], timeout: float = 120) -> list[dict]:
    """Block until the cluster at ``address`` has ``expected`` live nodes; returns their resources."""
    probe = (
        f"import json, ray; ray.init(address='{address}', logging_level='ERROR'); "
        "print(json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']])); ray.shutdown()"
    )
    deadline = time.time() + timeout
    while True:
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
        nodes = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else []
        if len(nodes) >= expected:
            return nodes
        if time.time() > deadline:
            raise TimeoutError(f"{len(nodes)} of {expected} Ray nodes up after {timeout:.0f} s: {out.stderr[-800:]}")
        time.sleep(2)


def actors_per_node(nodes: dict[str, subprocess.Popen]) -> dict[str, int]:
    """ClientApp actor processes now running under each node's ``ray start`` process."""
    counts = {}
    for name, proc in nodes.items():
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        counts[name] = sum(1 for child in children if "ClientAppActor" in " ".join(_cmdline(child)))
    return counts


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def stop_cluster(nodes: dict[str, subprocess.Popen], temp_dir: Path) -> list[int]:
    """SIGTERM the ``ray start --block`` processes, wait, then kill every process left whose command
    line names this cluster's temp dir; returns the PIDs that had to be killed."""
    for proc in nodes.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in nodes.values():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    time.sleep(2)
    leftover = [p for p in psutil.process_iter() if str(temp_dir) in " ".join(_cmdline(p))]
    for proc in leftover:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in leftover]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=4, help="simulated users (SuperNodes)")
    parser.add_argument("--user-cpus", type=int, default=2, help="CPUs of the users' node (one actor each)")
    parser.add_argument("--config", type=Path, help="a preset TOML of run-config keys (default: a small run)")
    args = parser.parse_args()
    temp_dir = Path(tempfile.mkdtemp(prefix="cbpray-", dir="/tmp"))  # short: Ray's socket paths must fit
    results = ROOT / ".state" / "ray-cluster"
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    env = {**os.environ, **RUN_ENV}
    gcs = free_port()
    address = f"127.0.0.1:{gcs}"
    common = ["--node-ip-address", "127.0.0.1", "--temp-dir", str(temp_dir), "--object-store-memory", "200000000"]
    head = common + ["--head", "--port", str(gcs), "--num-cpus", "0", "--resources", '{"provider": 1}']
    head += ["--include-dashboard", "false", "--ray-client-server-port", str(free_port())]
    users = common + [
        "--address",
        address,
        "--num-cpus",
        str(args.user_cpus),
        "--resources",
        json.dumps({"users": args.user_cpus}),
    ]
    nodes: dict[str, subprocess.Popen] = {}
    seen = {"head": 0, "users": 0}
    summary: dict = {"address": address, "temp_dir": str(temp_dir)}
    try:
        nodes["head"] = start_node(
            head + ["--dashboard-agent-listen-port", str(free_port())], env, results / "head.log"
        )
        wait_for_nodes(address, 1, env)
        nodes["users"] = start_node(
            users + ["--dashboard-agent-listen-port", str(free_port())], env, results / "users.log"
        )
        summary["nodes"] = wait_for_nodes(address, 2, env)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                for name, count in actors_per_node(nodes).items():
                    seen[name] = max(seen[name], count)
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.time()
        run = flwr_run(
            args.users,
            run_config_string(run_settings(args.config, args.users, results)),
            flwr_home=ROOT / ".state" / "flwr-ray-cluster",
            timeout=7200 if args.config else 900,
            extra_env={"RAY_ADDRESS": address},
        )
        done.set()
        sampler.join()
        summary.update(status=run.get("status"), seconds=round(time.time() - started, 1), actors_seen=seen)
        summary.update(users=args.users, preset=str(args.config or "small"))
        summary["rounds"] = round_lines(results / "ray-cluster", args.users)
    finally:
        summary["killed_after_stop"] = stop_cluster(nodes, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ok = summary.get("status") == "finished:completed" and seen["users"] > 0 and seen["head"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
