"""The federation sections: `flwr run` simulations on the tiny backbone and one real round (federation),
the per-component profile and the seconds-per-round curve to 10,000 users (scale)."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np

from simulations.bench.inprocess import Bench
from simulations.bench.measure import GENERATOR, ROOT, R, trained_generator
from simulations.scale_task import resolve


def federation(bench: Bench) -> dict:
    """`flwr run` simulations: the users sweep and the memory pair on the tiny backbone, one real round."""
    sizes = bench.sizes
    runs_dir = Path(bench.args.out) / "runs"
    preset = lambda name: resolve(tomllib.loads((ROOT / "simulations" / f"{name}.toml").read_text()))
    tiny = preset("scale-300") | {"num-rounds": 2, "diagonal": True}
    real = preset("real-100") | {"num-rounds": 1}
    if trained_generator():
        real["generator"] = str(GENERATOR)
    plan = [(f"tiny-{u}", tiny, u) for u in sizes.users]
    plan.append((f"tiny-{sizes.memory_users}-full", tiny | {"diagonal": False, "num-rounds": 1}, sizes.memory_users))
    if sizes.memory_users not in sizes.users:
        plan.append((f"tiny-{sizes.memory_users}", tiny | {"num-rounds": 1}, sizes.memory_users))
    plan.append((f"real-{sizes.real_users}", real, sizes.real_users))
    wanted = set(bench.args.runs.split(",")) if bench.args.runs else {label for label, _, _ in plan}
    kept = {r["run"]: r for r in bench.previous.get("federation", {}).get("runs", []) if r["run"] not in wanted}
    bench.start("federation", len(wanted))
    runs = []
    for label, settings, users in plan:
        if label in kept:
            runs.append(kept[label])
            continue
        bench.step(f"federation: {label} ({users} users)")
        runs.append(run_federation(label, settings, users, runs_dir))
    return {"runs": runs, "fedbpt_state_bytes": fedbpt_state_bytes(R), "overhead_bytes": up_overhead(R)}


def scale(bench: Bench) -> dict:
    """The per-component profile at ``profile_users`` and the seconds-per-round curve at
    ``scale_users``; ``--runs`` (e.g. profile-1000,scale-10000) reruns only those, keeping the others."""
    from simulations.profile_round import profile

    sizes, out = bench.sizes, Path(bench.args.out)
    preset = lambda name: resolve(tomllib.loads((ROOT / "simulations" / f"{name}.toml").read_text()))
    plan = [(f"profile-{u}", u) for u in sizes.profile_users] + [(f"scale-{u}", u) for u in sizes.scale_users]
    wanted = set(bench.args.runs.split(",")) if bench.args.runs else {label for label, _ in plan}
    before = bench.previous.get("scale", {})
    kept = {r["run"]: r for r in before.get("profiles", []) + before.get("runs", []) if r["run"] not in wanted}
    bench.start("scale", len(wanted & {label for label, _ in plan}))
    profiles, runs = [], []
    for label, users in plan:
        if label in kept:
            (profiles if label.startswith("profile") else runs).append(kept[label])
            continue
        bench.step(f"scale: {label} ({users} users)")
        if label.startswith("profile"):
            result = profile(preset("scale-1000"), users, out / "profile")
            profiles.append({"run": label, **{k: v for k, v in result.items() if k != "facts"}, **result["facts"]})
        else:
            runs.append(run_federation(label, preset("scale-10000"), users, out / "runs"))
    return {"profiles": profiles, "runs": runs}


def run_federation(label: str, settings: dict, users: int, runs_dir: Path) -> dict:
    """One `flwr run` (its log beside its folder); the figures of its last round."""
    from simulations.local_run import simulate

    folder = runs_dir / label
    shutil.rmtree(folder, ignore_errors=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    settings = {**settings, "min-users": users, "results-dir": str(runs_dir), "run-name": label}
    with (runs_dir / f"{label}.log").open("w") as log:
        facts = simulate(settings, users, folder, output=log)
    rounds_path = folder / "rounds.jsonl"
    rounds = [json.loads(line) for line in rounds_path.read_text().splitlines()] if rounds_path.exists() else []
    return round_figures(label, settings, users, facts, rounds)


def round_figures(label: str, settings: dict, users: int, facts: dict, rounds: list[dict]) -> dict:
    """The last round's figures: wall and forward seconds, framework ms per message, bytes, memory."""
    row = {
        "run": label,
        "users": users,
        "backbone": settings["backbone"],
        "diagonal": settings["diagonal"],
        "steps": settings["steps-per-round"],
        "popsize": settings["popsize"],
        "status": facts.get("status"),
        "peak_rss_gib": facts.get("peak_rss_gib"),
    }
    if not rounds:
        return row
    last = rounds[-1]
    totals = last["bytes"]["totals"]
    messages = totals["down"]["messages"] + totals["up"]["messages"]
    return row | {
        "rounds": len(rounds),
        "users_ok": last["users_ok"],
        "round_s": last["seconds"],
        "first_round_s": rounds[0]["seconds"],
        "forward_s": last["forward_seconds"],
        "messages": messages,
        "framework_ms_per_message": 1000 * (last["seconds"] - last["forward_seconds"]) / messages,
        "outside_forward_share": 1 - last["forward_seconds"] / last["seconds"],
        "up_bytes": last["bytes_up_per_user"],
        "up_wire_bytes": last["wire_up_per_user"],
        "up_floor_bytes": last.get("bytes_up_minimum_per_user"),
        "down_bytes": last["bytes_down_per_user"],
        "down_wire_bytes": last["wire_down_per_user"],
    }


def fedbpt_state_bytes(r: int) -> int:
    """Bytes of a pickled full-covariance pycma object at ``r`` after one generation: what FedBPT's
    reference design ships per user per round in each direction."""
    from cbp_fed.search import CMASearch, SearchConfig

    search = CMASearch(np.zeros(r), SearchConfig(popsize=6, budget=60), seed=0)
    population = search.ask()
    search.tell(np.arange(len(population), dtype=float))
    return len(search.to_bytes())


def up_overhead(r: int) -> dict[str, int]:
    """Flower's bytes for each up message of a round with every payload emptied (no candidates, texts,
    indices or z): the per-message overhead that the measured bytes exceed the payload floor by."""
    from cbp_fed import protocol as wire
    from cbp_fed.comm import deflated_size

    population = wire.population(np.zeros((0, r), np.float32), [])
    begin = wire.population(np.zeros((0, r), np.float32), [])
    begin["texts"] = wire.texts([], [], [], "boolq", "commonsense", 0)
    finish = wire.result(np.zeros(0, np.float32), dict.fromkeys(wire.RESULT_METRICS, 0.0))
    return {"begin": deflated_size(begin), "step": deflated_size(population), "finish": deflated_size(finish)}
