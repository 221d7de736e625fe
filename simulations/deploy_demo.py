"""A real Flower deployment on loopback: TLS, SuperNode authentication, the unchanged app, and a refused node.

    python -m simulations.deploy_demo [--users 3] [--workdir .state/deploy] [--keep-certs]

Steps (each named in the error message when it fails, with the tail of that process's log):
  1. certificates  a CA, a server certificate for 127.0.0.1/localhost, one ECDSA P-384 key pair per user
  2. superlink     `flower-superlink` with TLS, `--enable-supernode-auth` and a database in the workdir
  3. register      `flwr supernode register` of every user's public key (a TLS connection in FLWR_HOME)
  4. supernodes    N authenticated SuperNodes (`--node-config "partition-id=i num-partitions=N"`), plus one
                   with a fresh, unregistered key that must be refused before the run starts
  5. run           `flwr run . deploy --stream` with a tiny config, then the real status (`flwr list`) and
                   the run folder's summary.json
Everything started is stopped by PID in a ``finally`` (SIGTERM, then SIGKILL), also on error or Ctrl-C, and
checked gone. The report goes to the console and to <workdir>/deploy_demo.json; the exit code is 0 only if
every step passed. Each process logs to <workdir>/logs/; each "machine" (SuperLink, every SuperNode, the
user's CLI) has its own FLWR_HOME under <workdir>/homes/. Private keys are deleted at the end unless
--keep-certs.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulations.local_run import ROOT, RUN_ENV, print_rounds, run_config_string

CONNECTION = "deploy"
RUN_NAME = "deploy-demo"
SIMULATION_PORTS = {9091, 9092, 9093, 9094, 39091}  # Flower's defaults: never take them from a local simulation
CURVE = ec.SECP384R1()
REPORT_KEYS = (
    "status users users_in_run tls node_auth superlink refused_node seconds leftover wall_seconds error".split()
)


class StepFailed(Exception):
    """The step under way went wrong; ``log`` is the file of the process to show the tail of."""

    def __init__(self, message: str, log: Path | None = None):
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class Failure:
    """What the report says about a failed demo: the step, why, and the log to show the tail of."""

    step: str
    message: str
    log: Path | None = None

    def __str__(self) -> str:
        return f"step '{self.step}' failed: {self.message}"


# ------------------------------------------------------------------ certificates and keys
@dataclass(frozen=True)
class Tls:
    """PEM files of the SuperLink's TLS: the CA (the root certificate clients trust), its certificate and key."""

    ca: Path
    cert: Path
    key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(subject: str, public_key, issuer: x509.Name | None, signer, ca: bool, sans=()) -> x509.Certificate:
    """A one-year X.509 certificate; self-signed when ``issuer`` is None."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signer, hashes.SHA384())


def write_tls(folder: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Tls:
    """A fresh CA and a server certificate it signed, valid for ``hosts`` (IP addresses or DNS names)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, server_key = ec.generate_private_key(CURVE), ec.generate_private_key(CURVE)
    ca_cert = _certificate("cbp-fed demo CA", ca_key.public_key(), None, ca_key, ca=True)
    sans = [_san(host) for host in hosts]
    server_cert = _certificate(hosts[0], server_key.public_key(), ca_cert.subject, ca_key, ca=False, sans=sans)
    tls = Tls(folder / "ca.crt", folder / "server.pem", folder / "server.key")
    tls.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_secret(tls.key, _pem_key(server_key))
    return tls


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def write_node_key(folder: Path, name: str) -> tuple[Path, Path]:
    """An ECDSA P-384 key pair in the formats Flower reads: the private key as an OpenSSH private key
    (`--auth-supernode-private-key`, read with ``load_ssh_private_key``), the public key as an OpenSSH public
    key line (`flwr supernode register`, read with ``load_ssh_public_key``), like ``ssh-keygen -t ecdsa -b 384``."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(CURVE)
    private, public = folder / name, folder / f"{name}.pub"
    _write_secret(
        private,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
    )
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public.write_bytes(line + f" {name}\n".encode())
    return private, public


def _write_secret(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only."""
    path.write_bytes(data)
    path.chmod(0o600)


# ------------------------------------------------------------------ processes
def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports chosen by the OS, none of Flower's simulation defaults."""
    sockets, ports = [], []
    try:
        while len(ports) < count:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            port = sock.getsockname()[1]
            if port not in SIMULATION_PORTS:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


class Processes:
    """The long-running processes of the demo, each with its own log file, and everything they spawn.

    Flower's SuperLink and SuperNodes start SuperExec processes in new sessions, and those start the apps,
    so a process group is not enough: descendants are collected with psutil while their parents live."""

    def __init__(self, logs: Path, markers: list[str]):
        self.logs, self.markers = logs, markers
        self.popens: dict[str, subprocess.Popen] = {}
        self.known: dict[int, psutil.Process] = {}

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start ``command`` in its own session (Ctrl-C reaches only this script, which stops it in order)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with self.log(name).open("wb") as log:
            popen = subprocess.Popen(
                command,
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.popens[name] = popen
        self.known[popen.pid] = psutil.Process(popen.pid)
        return popen

    def follow(self, name: str, popen: subprocess.Popen, timeout: float) -> bool:
        """Echo the process's log while it runs (like `tail -f`); False if it still runs after ``timeout`` s."""
        deadline = time.time() + timeout
        with self.log(name).open(errors="replace") as log:
            while popen.poll() is None and time.time() < deadline:
                print(log.read(), end="", flush=True)
                time.sleep(0.5)
            print(log.read(), end="", flush=True)
        return popen.returncode is not None

    def collect(self) -> None:
        """Add the living descendants of known processes, and any Flower process (`flower-*`, `flwr*`) whose
        command line names a marker (the workdir, our ports): a SuperExec or app whose parent exited is found so."""
        for process in list(self.known.values()):
            try:
                for child in process.children(recursive=True):
                    self.known.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                pass
        for process in psutil.process_iter():
            argv = _cmdline(process)
            program = any(Path(arg).name.startswith(("flower-", "flwr")) for arg in argv[:2])
            if program and any(marker in " ".join(argv) for marker in self.markers):
                self.known.setdefault(process.pid, process)

    def alive(self) -> list[psutil.Process]:
        """Known processes still running (a reaped or zombie process is gone; PID reuse is not mistaken)."""
        return [p for p in self.known.values() if _running(p)]

    def stop_all(self, grace: float = 10.0) -> list[str]:
        """SIGTERM every known process, SIGKILL what is left after ``grace`` seconds; returns the survivors."""
        self.collect()
        for process in self.alive():
            _signal(process, signal.SIGTERM)
        psutil.wait_procs(self.alive(), timeout=grace)
        self.collect()
        for process in self.alive():
            _signal(process, signal.SIGKILL)
        psutil.wait_procs(self.alive(), timeout=5)
        for popen in self.popens.values():
            popen.poll()  # reap our direct children
        return [f"{p.pid} {' '.join(_cmdline(p))[:120]}" for p in self.alive()]


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal(process: psutil.Process, sig: signal.Signals) -> None:
    try:
        process.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def tail(path: Path | None, lines: int = 25) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ------------------------------------------------------------------ the deployment
class Deployment:
    """The workdir layout, the environment of every "machine", and the steps of the demo."""

    def __init__(self, workdir: Path, users: int):
        self.workdir, self.users = workdir.resolve(), users
        self.certs, self.keys = self.workdir / "certs", self.workdir / "keys"
        self.results = self.workdir / "results"
        self.port, *self.node_ports = free_ports(users + 2)
        self.address = f"127.0.0.1:{self.port}"
        markers = [str(self.workdir), *(f"127.0.0.1:{port}" for port in (self.port, *self.node_ports))]
        self.processes = Processes(self.workdir / "logs", markers)
        self.tls: Tls | None = None
        self.step = "start"
        self.facts: dict = {"users": users, "tls": None, "node_auth": None, "superlink": self.address}

    def clean(self) -> None:
        """Remove what an earlier demo left in the workdir (a reused run folder would append rounds)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in ("certs", "keys", "logs", "homes", "results"):
            shutil.rmtree(self.workdir / name, ignore_errors=True)
        for path in [*self.workdir.glob("state.db*"), self.workdir / "deploy_demo.json"]:
            path.unlink(missing_ok=True)

    def env(self, machine: str) -> dict[str, str]:
        """Environment of one "machine": its own FLWR_HOME, the venv's bin on PATH, no downloads."""
        home = self.workdir / "homes" / machine
        home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **RUN_ENV, "FLWR_HOME": str(home)}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        return env

    def cli_env(self) -> dict[str, str]:
        """Environment of the provider's `flwr` CLI (its FLWR_HOME holds the connection, `write_connection`)."""
        return self.env("cli")

    def write_connection(self) -> None:
        """The CLI's connection "deploy": the SuperLink's address and the CA that signed its certificate."""
        (Path(self.cli_env()["FLWR_HOME"]) / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.address}"\nroot-certificates = "{self.tls.ca}"\n'
        )

    def flwr_json(self, log_name: str, *args: str, timeout: float = 120) -> dict:
        """Run a `flwr` CLI command with ``--format json``; its output goes to logs/<log_name>.log. Returns the
        parsed answer; fails unless it says success (`flwr` can exit 0 on an error it reports in the JSON)."""
        command, log = ["flwr", *args, "--format", "json"], self.processes.log(log_name)
        try:
            done = subprocess.run(
                command, env=self.cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as error:
            raise StepFailed(f"`{' '.join(command)}` did not finish in {timeout:.0f} s") from error
        with log.open("a") as file:
            file.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
        try:
            answer = json.loads(done.stdout)
        except json.JSONDecodeError:
            answer = {}
        if done.returncode != 0 or not answer.get("success"):
            raise StepFailed(f"`{' '.join(command)}` exited {done.returncode}: {answer.get('error-message')}", log)
        return answer

    # ---------------------------------------------------------- steps
    def make_certificates(self) -> list[tuple[Path, Path]]:
        self.tls = write_tls(self.certs)
        return [write_node_key(self.keys, f"user{i}") for i in range(self.users)]

    def start_superlink(self, timeout: float = 90) -> None:
        command = [
            "flower-superlink",
            *("--ssl-ca-certfile", str(self.tls.ca), "--ssl-certfile", str(self.tls.cert)),
            *("--ssl-keyfile", str(self.tls.key), "--enable-supernode-auth"),
            *("--database", str(self.workdir / "state.db"), "--disable-runtime-dependency-installation"),
            *("--host", "127.0.0.1", "--port", str(self.port)),
        ]
        popen = self.processes.start("superlink", command, self.env("superlink"))
        deadline = time.time() + timeout
        while not _listening(self.port):
            if popen.poll() is not None or time.time() > deadline:
                why = f"exited {popen.returncode}" if popen.returncode is not None else f"not up in {timeout:.0f} s"
                raise StepFailed(why, self.processes.log("superlink"))
            time.sleep(0.5)

    def check_tls(self) -> str:
        """Handshake with the SuperLink's port as a client trusting only our CA (the certificate must verify for
        127.0.0.1); returns the TLS version agreed."""
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    return tls.version()
        except (ssl.SSLError, OSError) as error:
            raise StepFailed(f"TLS handshake with {self.address} failed: {error}") from error

    def register(self, public_keys: list[Path]) -> list[str]:
        """Register the users' public keys with the SuperLink (in parallel: each `flwr` call takes seconds to
        start); returns the node ids it assigned."""

        def one(key: Path) -> str:
            return str(self.flwr_json("register", "supernode", "register", str(key), CONNECTION)["node-id"])

        self.write_connection()
        with ThreadPoolExecutor(len(public_keys)) as pool:
            return list(pool.map(one, public_keys))

    def start_supernode(self, name: str, private_key: Path, port: int, partition: int | None) -> subprocess.Popen:
        command = [
            "flower-supernode",
            *("--superlink", self.address, "--root-certificates", str(self.tls.ca)),
            *("--auth-supernode-private-key", str(private_key), "--host", "127.0.0.1", "--port", str(port)),
        ]
        if partition is not None:
            command += ["--node-config", f"partition-id={partition} num-partitions={self.users}"]
        return self.processes.start(name, command, self.env(name))

    def start_users(self, keys: list[tuple[Path, Path]]) -> None:
        for i, (private, _) in enumerate(keys):
            self.start_supernode(f"user{i}", private, self.node_ports[i], partition=i)

    def wait_online(self, expected: int, timeout: float = 120) -> list[dict]:
        """Wait until ``expected`` registered SuperNodes are online (`flwr supernode list`)."""
        deadline = time.time() + timeout
        while True:
            nodes = self.flwr_json("online", "supernode", "list", CONNECTION)["nodes"]
            if sum(node["status"] == "online" for node in nodes) >= expected:
                return nodes
            for i in range(self.users):
                if self.processes.popens[f"user{i}"].poll() is not None:
                    raise StepFailed(f"user{i}'s SuperNode exited", self.processes.log(f"user{i}"))
            if time.time() > deadline:
                raise StepFailed(f"not all {expected} SuperNodes online after {timeout:.0f} s: {nodes}")
            time.sleep(1)

    def refuse_stranger(self, timeout: float = 90) -> dict:
        """A SuperNode with a fresh, unregistered key must exit non-zero on its own (checked before the run, so the
        federation is exactly the registered users). Returns its process exit code (Flower exits 1 on any error),
        the Flower exit code it logged (305: no connection) and the SuperLink's reason."""
        stranger, _ = write_node_key(self.keys, "unregistered")
        popen = self.start_supernode("unregistered", stranger, self.node_ports[-1], partition=None)
        log = self.processes.log("unregistered")
        try:
            code = popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise StepFailed(f"the unregistered SuperNode still runs after {timeout:.0f} s", log) from error
        if code == 0:
            raise StepFailed("the unregistered SuperNode exited 0", log)
        text = log.read_text(errors="replace")
        flower_code = re.search(r"Exit Code: (\d+)", text)
        reason = re.search(r"^\[code: \d+\].*$", text, re.MULTILINE)
        superlink = re.search(
            r"activate-node\]\[ApiError.*exception: (.*)$", self.processes.log("superlink").read_text(), re.M
        )
        return {
            "exit_code": code,
            "flower_exit_code": int(flower_code.group(1)) if flower_code else None,
            "message": reason.group(0) if reason else tail(log, 1),
            "superlink_says": superlink.group(1) if superlink else None,
        }

    def run_app(self, timeout: float = 900) -> None:
        """`flwr run . deploy --stream` with a tiny, fast config; its status in `flwr list` must be completed."""
        settings = {
            "backbone": "tiny-random",
            "sdt-steps": 3,
            "r": 16,
            "m": 8,
            "t": 2,
            "tasks": "sst2",
            "num-rounds": 1,
            "steps-per-round": 1,
            "popsize": 4,
            "shots-per-class": 3,
            "n-test": 12,
            "min-users": self.users,
            "results-dir": str(self.results),
            "run-name": RUN_NAME,
        }
        self.facts["run_config"] = settings
        command = ["flwr", "run", str(ROOT), CONNECTION, "--stream", "--run-config", run_config_string(settings)]
        popen = self.processes.start("run", command, self.cli_env())
        if not self.processes.follow("run", popen, timeout):
            raise StepFailed(f"`flwr run` did not finish in {timeout:.0f} s", self.processes.log("run"))
        superlink = self.processes.popens["superlink"]
        if superlink.poll() is not None:
            why = f"the SuperLink exited ({superlink.returncode}) during the run: did another program stop it?"
            raise StepFailed(why, self.processes.log("superlink"))
        runs = self.flwr_json("status", "list", CONNECTION)["runs"]
        if not runs:
            raise StepFailed("`flwr list` shows no run", self.processes.log("run"))
        run = max(runs, key=lambda r: r["pending-at"])
        self.facts.update(run_id=run.get("run-id"), status=run["status"])
        if run["status"] != "finished:completed":
            raise StepFailed(f"run {run.get('run-id')} ended {run['status']}", self.processes.log("run"))

    def check_run_folder(self) -> dict:
        folder = self.results / RUN_NAME
        summary_path = folder / "summary.json"
        if not summary_path.exists():
            raise StepFailed(f"{summary_path} missing", self.processes.log("run"))
        summary = json.loads(summary_path.read_text())
        rounds = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
        partitions = sorted(rounds[-1]["bytes"]["users"])
        if summary["users"] != self.users or partitions != [str(i) for i in range(self.users)]:
            raise StepFailed(f"expected {self.users} users, got {summary['users']} ({partitions})")
        return {
            "folder": str(folder),
            "users_in_run": summary["users"],
            "partitions": partitions,
            "final_test_accuracy": summary["final_test_accuracy"],
        }


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def deploy(deployment: Deployment) -> None:
    """The demo's steps, in order; fills ``deployment.facts`` (with the seconds each step took) and keeps
    ``deployment.step`` naming the step under way. Stopping is the caller's ``finally``."""
    seconds = deployment.facts.setdefault("seconds", {})

    def step(name: str, function, *args):
        deployment.step, started = name, time.time()
        result = function(*args)
        seconds[name] = round(time.time() - started, 1)
        return result

    keys = step("certificates", deployment.make_certificates)
    step("superlink", deployment.start_superlink)
    deployment.facts["tls"] = step("tls", deployment.check_tls)
    deployment.facts["node_ids"] = step("register", deployment.register, [public for _, public in keys])
    step("supernodes", deployment.start_users, keys)
    deployment.facts["refused_node"] = step("refusal", deployment.refuse_stranger)
    deployment.facts["node_auth"] = True
    step("online", deployment.wait_online, deployment.users)
    step("run", deployment.run_app)
    deployment.facts.update(step("run folder", deployment.check_run_folder))


def report(facts: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from cbp_fed.console import make_console

    table = Table("fact", "value", title="deploy demo (loopback, TLS + SuperNode authentication)")
    for key in REPORT_KEYS:
        if key in facts:
            table.add_row(key, escape(json.dumps(facts[key])))
    make_console().print(table)


def _interrupt(signum, frame) -> None:
    """SIGTERM (a CI timeout, `kill`) stops the demo like Ctrl-C: everything it started is stopped and reported."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=3, help="authenticated SuperNodes (one partition each)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".state" / "deploy", help="certs, logs, state, results")
    parser.add_argument("--keep-certs", action="store_true", help="keep the private keys after the demo")
    args = parser.parse_args()
    if args.users < 1:
        parser.error("--users must be at least 1")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops cleanly even if started with it ignored
    signal.signal(signal.SIGTERM, _interrupt)

    started = time.time()
    deployment = Deployment(args.workdir, args.users)
    deployment.clean()
    error = None
    try:
        deploy(deployment)
    except StepFailed as failure:
        error = Failure(deployment.step, str(failure), failure.log)
    except KeyboardInterrupt:
        error = Failure(deployment.step, "interrupted (Ctrl-C or SIGTERM)")
    except Exception as unexpected:  # any failure is reported with its step, then everything stops
        log = deployment.processes.log(deployment.step)
        error = Failure(deployment.step, f"{type(unexpected).__name__}: {unexpected}", log if log.exists() else None)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        deployment.facts["leftover"] = deployment.processes.stop_all()
        if not args.keep_certs:
            for folder in (deployment.keys, deployment.certs):
                shutil.rmtree(folder, ignore_errors=True)
    if error is None and deployment.facts["leftover"]:
        error = Failure("stop", f"processes left running: {deployment.facts['leftover']}")
    return finish(deployment, error, time.time() - started)


def finish(deployment: Deployment, error: Failure | None, wall: float) -> int:
    """Write deploy_demo.json, print the rounds and the report (and the failed step's log tail); the exit code."""
    facts = deployment.facts
    facts.setdefault("status", "not checked")
    facts.update(ok=error is None, wall_seconds=round(wall, 1), started_pids=sorted(deployment.processes.known))
    if error is not None:
        facts["error"] = str(error)
    (deployment.workdir / "deploy_demo.json").write_text(json.dumps(facts, indent=2) + "\n")
    if (deployment.results / RUN_NAME / "rounds.jsonl").exists():
        print_rounds(deployment.results / RUN_NAME)
    report(facts)
    if error is None:
        return 0
    print(f"\nFAILED: {error}", file=sys.stderr)
    if error.log is not None:
        print(f"--- last lines of {error.log}:\n{tail(error.log)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
