"""Where a user's round goes: a real `flwr run` sampled by py-spy, CPU time per component per user per round.

    python -m simulations.profile_round --users 1000 [--config simulations/scale-1000.toml] [--rate 10]

The users' data is the preset's ``tasks`` (the scale presets name the scale task, ``simulations/scale_task.py``,
written on first use).

py-spy (a sampling profiler, `pip install py-spy`) follows the run's SuperLink and every process it
starts (the SuperExec, the ServerApp's simulation process, the Ray workers that host the ClientApp
actors) and records each sample's Python stack. Only the run's last round is
sampled (start-up, imports and the first round's caches stay out). The OS counts each process's CPU
time over that round (psutil); py-spy's samples (threads found running) share each process's CPU time
out among components: each stack goes to the component of its innermost frame that names one
(``COMPONENTS``: e.g. a pickle call under ``CMASearch.from_bytes`` is user state, under Ray's serialiser
it is Ray moving the message and context). CPU ms / users is the component's ms per user per round.
Processes without Python stacks (Ray's C++ raylet and GCS) keep their own line.

Writes ``profile-<users>.json`` (the table, the top stacks per component, the run's facts) and
``profile-<users>.txt`` (py-spy's collapsed stacks, for any flame-graph tool) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter
from pathlib import Path

import psutil

from simulations import scale_task
from simulations.local_run import ROOT, free_port, simulate, superlinks

WHOLE_STACK: tuple[tuple[str, str], ...] = (
    # (component, regex on any frame): work named by an outer frame, whatever library it calls
    ("logs (Flower's upload and stream, Ray's log monitor)", r"_log_uploader|_stream_logs|LogMonitor|print_logs"),
    ("Flower delivery sweep (LinkState, every node)", r"add_messages_to_queue"),
    ("Flower parent-process monitors", r"start_parent_process_monitor"),
    ("metering", r"MessageRecord\.of "),  # Flower's serialisers do the work: deflating every message to count it
)
COMPONENTS: tuple[tuple[str, str], ...] = (
    # (component, regex on one frame "function (file:line)"); the innermost matching frame decides
    ("logging", r"\(logging/|rich/|flwr/common/logger\.py"),
    ("user state (de)serialising", r"CMASearch\.(from_bytes|to_bytes)|User\.(save_to_disk|restore_from_disk)"),
    ("metering", r"cbp_fed/comm\.py"),
    ("BlackBox forward (provider)", r"BlackBox\.score \("),
    ("validation (provider)", r"MultiStepStrategy\._(new_texts|read_all|valid|points|claim)|cbp_fed/protocol\.py"),
    ("provider per-reply work", r"strategies/|cbp_fed/server_app\.py"),
    ("task loading and splitting", r"cbp_fed/tasks/"),
    ("CMA-ES ask/tell", r"cbp_fed/search\.py|\(cma/"),
    ("user handler other", r"cbp_fed/(client_app|config|faults|privacy)"),
    ("Ray (de)serialising message + context", r"ray/_private/serialization\.py|ray/cloudpickle"),
    ("Ray actor dispatch", r"\(ray/"),
    ("Flower message handling", r"\(flwr/|grpc/|google/protobuf"),
    ("imports", r"<frozen importlib"),
)
WAITING = re.compile(
    r"^(Condition\.wait|Event\.wait|Queue\.get|BaseSelector\.select|EpollSelector\.select|select|sleep|"
    r"Worker\.main_loop|Runner\.run|_wait_for_tstate_lock|Thread\.join|get_objects) "
)
"""Innermost frames of a thread that py-spy finds "active" while it blocks in native code (a lock, a
selector, Ray's task loop): waiting, not work; such samples are left out."""
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(:\d+)?\)$")


def component(frames: list[str]) -> str:
    """The component of one stack (outermost first): the first of ``WHOLE_STACK`` any frame matches, else
    that of its innermost frame matching ``COMPONENTS``."""
    for name, pattern in WHOLE_STACK:
        if any(re.search(pattern, frame) for frame in frames):
            return name
    for frame in reversed(frames):
        for name, pattern in COMPONENTS:
            if re.search(pattern, frame):
                return name
    return "other"


def process_kind(frames: list[str]) -> str:
    """Which of the run's processes a stack was sampled in, from py-spy's ``process PID:"cmdline"`` frames."""
    processes = [f for f in frames if f.startswith("process ")]
    command = processes[-1] if processes else ""
    for kind, marker in (
        ("ClientApp actors (Ray workers)", r"ray::|ray/_private/workers/"),
        ("ServerApp + simulation", r"flwr-simulation"),
        ("SuperLink", r"flower-superlink"),
        ("SuperExec", r"flower-superexec"),
        ("Ray raylet + GCS (C++)", r"raylet|gcs_server"),
    ):
        if re.search(marker, command):
            return kind
    return "other Ray processes"


def read_collapsed(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw output: one ``frame;frame;... count`` line per distinct stack."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def table(stacks: list[tuple[list[str], int]], cpu_ms: dict[str, float]) -> dict:
    """ms per user per round by component: each process kind's CPU time (``cpu_ms``, the OS's count per
    user) shared out in proportion to py-spy's samples of that kind (a loaded machine makes py-spy fall
    behind and take fewer samples than its rate; the shares stay right). Samples of a thread blocked in
    native code (``WAITING``: Ray's C++ task loop, locks, selectors) count as "native (Ray core, waits)".
    Returns the components, the processes and each heavy component's heaviest stacks."""
    samples, top = Counter(), {}
    for frames, count in stacks:
        name = "native (Ray core, waits)" if WAITING.match(frames[-1]) else component(frames)
        samples[process_kind(frames), name] += count
        code = [f for f in frames if not f.startswith("process ")]
        top.setdefault(name, Counter())[";".join(short(f) for f in code[-14:])] += count
    per_kind = Counter()
    for (kind, _), count in samples.items():
        per_kind[kind] += count
    components = Counter()
    for (kind, name), count in samples.items():
        components[name] += cpu_ms.get(kind, 0.0) * count / per_kind[kind]
    unsampled = {k: v for k, v in cpu_ms.items() if k not in per_kind}  # C++ processes: no Python stacks
    for kind, ms in unsampled.items():
        components[kind] += ms
    ranked = [name for name, _ in components.most_common()]
    return {
        "components": {name: round(components[name], 2) for name in ranked},
        "processes": {kind: round(ms, 2) for kind, ms in sorted(cpu_ms.items(), key=lambda kv: -kv[1])},
        "top_stacks": {name: top[name].most_common(5) for name in [n for n in ranked if n in top][:3]},
        "samples": sum(samples.values()),
    }


def short(frame: str) -> str:
    """``function (file:line)`` -> ``function (file)`` with the file's last two path parts."""
    match = FRAME.match(frame)
    if not match:
        return frame
    return f"{match['function']} ({'/'.join(Path(match['file']).parts[-2:])})"


def cpu_seconds(root: int) -> dict[int, tuple[str, float]]:
    """User + system CPU seconds so far of ``root`` and every process under it, by PID, with its kind."""
    processes = [psutil.Process(root)]
    processes += processes[0].children(recursive=True)
    out = {}
    for proc in processes:
        try:
            times = proc.cpu_times()
            out[proc.pid] = (
                process_kind([f'process {proc.pid}:"{" ".join(proc.cmdline())}"']),
                times.user + times.system,
            )
        except psutil.Error:
            pass
    return out


class LastRound:
    """py-spy over a run's last round only: started on the SuperLink (following every process under it,
    the Ray workers that host the ClientApp actors included, which exist by then) when the run folder's
    rounds.jsonl shows the round before it finished, stopped with SIGINT (py-spy then writes its file)
    when the last round's line appears. Start-up (imports, Ray, the prompt generator) stays out."""

    def __init__(self, port: int, rounds_file: Path, rounds: int, out: Path, rate: int):
        self.port, self.rounds_file, self.rounds, self.out, self.rate = port, rounds_file, rounds, out, rate
        self.spy: subprocess.Popen | None = None
        self.seconds = 0.0
        self.cpu: Counter = Counter()  # CPU seconds of the last round per kind of process (the OS's count)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _lines(self) -> int:
        return len(self.rounds_file.read_text().splitlines()) if self.rounds_file.exists() else 0

    def _watch(self) -> None:
        while not self.done.is_set() and self._lines() < self.rounds - 1:
            time.sleep(0.2)
        pids = superlinks(self.port)
        if self.done.is_set() or not pids:
            return
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        command = [spy, "record", "--subprocesses", "--nonblocking", "-r", str(self.rate), "-f", "raw"]
        started, before = time.monotonic(), cpu_seconds(min(pids))
        with self.out.with_suffix(".py-spy.log").open("w") as log:
            self.spy = subprocess.Popen(
                command + ["-o", str(self.out), "--pid", str(min(pids))], stdout=log, stderr=subprocess.STDOUT
            )
        while not self.done.is_set() and self._lines() < self.rounds:
            time.sleep(0.2)
        after = cpu_seconds(min(pids))
        self.cpu = Counter()
        for pid, (kind, seconds) in after.items():
            self.cpu[kind] += seconds - before.get(pid, (kind, 0.0))[1]
        self.spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT (it outlives what it follows)
        self.spy.wait(timeout=300)
        self.seconds = time.monotonic() - started

    def __enter__(self) -> LastRound:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def framework_ms_per_user(record: dict, users: int) -> float:
    """A round's wall time outside the BlackBox forward, in ms per user (a rounds.jsonl record)."""
    return round(1000 * (record["seconds"] - record["forward_seconds"]) / users, 1)


def profile(settings: dict, users: int, out: Path, rate: int = 10) -> dict:
    """One profiled run of ``settings`` with ``users`` users; returns (and writes) its last round's table."""
    out.mkdir(parents=True, exist_ok=True)
    name = f"profile-{users}"
    raw, folder = out / f"{name}.txt", out / "runs" / name
    raw.unlink(missing_ok=True)
    settings = {**settings, "min-users": users, "results-dir": str(out / "runs"), "run-name": name}
    shutil.rmtree(folder, ignore_errors=True)
    port = free_port()
    with LastRound(port, folder / "rounds.jsonl", settings["num-rounds"], raw, rate) as spy:
        with (out / f"{name}.log").open("w") as log:
            facts = simulate(settings, users, folder, output=log, port=port)
    if not raw.exists():
        raise RuntimeError(f"py-spy wrote no samples ({raw.with_suffix('.py-spy.log')}); run status {facts['status']}")
    last = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()][-1]
    result = {
        "users": users,
        "round": last["round"],
        "users_ok": last["users_ok"],
        "round_s": last["seconds"],
        "forward_s": last["forward_seconds"],
        "framework_ms_per_user": framework_ms_per_user(last, users),
        "sampled_s": round(spy.seconds, 1),
        "rate_hz": rate,
        "facts": facts,
        **table(read_collapsed(raw), {k: 1000 * v / users for k, v in spy.cpu.items()}),
    }
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--config", type=Path, default=ROOT / "simulations" / "scale-1000.toml")
    parser.add_argument("--rate", type=int, default=10, help="py-spy samples per second per process")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "profile")
    args = parser.parse_args()
    settings = tomllib.loads(args.config.read_text())
    settings = scale_task.resolve(settings)
    result = profile(settings, args.users, args.out, args.rate)
    keys = ("users", "users_ok", "round_s", "forward_s", "framework_ms_per_user", "components", "processes")
    print(json.dumps({k: result[k] for k in keys}, indent=2))
    return 0 if result["facts"]["status"] == "finished:completed" else 1


if __name__ == "__main__":
    sys.exit(main())
