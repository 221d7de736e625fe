"""A real deployment on loopback with TLS and SuperNode authentication (`make deploy-demo`), and its key material."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key
from flwr.cli.supernode.register import try_load_public_key
from flwr.supercore.primitives.asymmetric import public_key_to_bytes

from simulations.deploy_demo import write_node_key, write_tls
from simulations.local_run import ROOT


def test_server_certificate_verifies_against_the_ca_for_loopback(tmp_path):
    tls = write_tls(tmp_path)
    ca = x509.load_pem_x509_certificate(tls.ca.read_bytes())
    server = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    key = load_pem_private_key(tls.key.read_bytes(), None)
    assert key.public_key() == server.public_key()
    assert tls.key.stat().st_mode & 0o077 == 0  # private: owner only


def test_node_keys_are_read_by_flowers_own_loaders(tmp_path):
    private, public = write_node_key(tmp_path, "user0")
    key = load_ssh_private_key(private.read_bytes(), None)  # what `--auth-supernode-private-key` does
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert try_load_public_key(public) == public_key_to_bytes(key.public_key())  # what `supernode register` does
    assert private.stat().st_mode & 0o077 == 0


def _living_flower_cmdline(process: psutil.Process) -> str:
    """The command line of a running Flower process; "" for anything else, or a process that is gone."""
    try:
        cmdline, alive = " ".join(process.cmdline()), process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""
    return cmdline if alive and ("flower-" in cmdline or "flwr" in cmdline) else ""


@pytest.mark.slow
def test_deploy_demo_completes_with_tls_and_node_auth_and_refuses_a_stranger(tmp_path):
    workdir = tmp_path / "deploy"
    done = subprocess.run(
        [sys.executable, "-m", "simulations.deploy_demo", "--users", "2", "--workdir", str(workdir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    facts = json.loads((workdir / "deploy_demo.json").read_text())
    assert facts["ok"] and facts["status"] == "finished:completed"
    assert facts["tls"] in ("TLSv1.2", "TLSv1.3") and facts["node_auth"] is True

    folder = workdir / "results" / "deploy-demo"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["users"] == 2 and summary["rounds"] == 1
    [record] = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    assert record["users_ok"] == 2 and record["failures"] == []
    assert sorted(record["bytes"]["users"]) == ["0", "1"]  # both partitions took part

    refused = facts["refused_node"]
    assert refused["exit_code"] != 0 and refused["flower_exit_code"] == 305
    assert "public key" in refused["superlink_says"]

    assert facts["leftover"] == []
    markers = [str(workdir), facts["superlink"]]
    left = [
        f"{p.pid} {cmdline}"
        for p in psutil.process_iter()
        if (cmdline := _living_flower_cmdline(p))
        and (p.pid in facts["started_pids"] or any(m in cmdline for m in markers))
    ]
    assert left == []  # no SuperLink, SuperNode, SuperExec or app process of the demo survives it
    assert not (workdir / "keys").exists() and not (workdir / "certs").exists()  # private keys removed
