"""ops/runbook.md and ops/systemd/ are true: every ```bash block of the runbook runs, in order, in
one shell against a scratch data directory (EVIDENCEOS_REHEARSAL=1: the daemon is a child
process, not a systemd unit); ```text blocks are skipped by design. The unit file is checked for
what the runbook promises (Type=notify, SIGHUP reload, hardening), and the daemon is shown to
send READY=1 to $NOTIFY_SOCKET only once it serves."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tests.support.daemon import BIN_DIR, DaemonProcess, daemon_env
from tests.support.paths import REPO_ROOT

RUNBOOK = REPO_ROOT / "ops" / "runbook.md"
UNIT = REPO_ROOT / "ops" / "systemd" / "evidenceosd.service"
ENV_EXAMPLE = REPO_ROOT / "ops" / "systemd" / "evidenceosd.env.example"
FENCE = re.compile(r"^```([A-Za-z]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, line number, body) of every fenced block."""
    return [(m[1], text.count("\n", 0, m.start()) + 1, m[2]) for m in FENCE.finditer(text)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_every_block_is_tagged_bash_or_text() -> None:
    found = blocks(RUNBOOK.read_text(encoding="utf-8"))
    assert found, "no code blocks in the runbook"
    assert {lang for lang, _, _ in found} <= {"bash", "text"}, [
        (lang, line) for lang, line, _ in found if lang not in ("bash", "text")
    ]
    assert sum(lang == "bash" for lang, _, _ in found) >= 15


@pytest.mark.process
@pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("bash", "jq", "curl", "openssl", "sha256sum", "tar")),
    reason="the runbook uses bash, jq, curl, openssl, sha256sum and tar",
)
def test_runbook_bash_blocks_run_against_a_scratch_data_dir(tmp_path: Path) -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    bash = [(line, body) for lang, line, body in blocks(text) if lang == "bash"]
    script = [
        "set -euo pipefail",
        # Whatever happens, no daemon outlives the rehearsal.
        'trap \'if [ -n "${DAEMON_PID:-}" ]; then kill -TERM "$DAEMON_PID" 2>/dev/null;'
        ' wait "$DAEMON_PID" 2>/dev/null; fi; true\' EXIT',
    ]
    for index, (line, body) in enumerate(bash):
        script.append(f"echo '@@ runbook block {index} (line {line})'")
        script.append(body)
    script.append("echo '@@ runbook done'")
    home = tmp_path / "home"
    home.mkdir()
    env = daemon_env(
        {
            "EVIDENCEOS_REHEARSAL": "1",
            "EVOS_BIN": str(BIN_DIR),
            "DATA_DIR": str(tmp_path / "data"),
            "OPS": str(tmp_path / "ops"),
            "EVIDENCEOS_ENDPOINT": f"127.0.0.1:{free_port()}",
            "METRICS": f"127.0.0.1:{free_port()}",
            "HOME": str(home),
            "PATH": f"{BIN_DIR}:/usr/local/bin:/usr/bin:/bin",
        }
    )
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout
    if result.returncode != 0 or "@@ runbook done" not in output:
        markers = re.findall(r"@@ runbook block (\d+) \(line (\d+)\)", output)
        index = int(markers[-1][0]) if markers else 0
        line = bash[index][0]
        log = tmp_path / "ops" / "evidenceosd.log"
        daemon_log = log.read_text()[-3000:] if log.exists() else ""
        pytest.fail(
            f"runbook block at line {line} failed (exit {result.returncode}):\n"
            f"{bash[index][1]}\n--- stdout (tail)\n{output[-3000:]}\n--- stderr (tail)\n"
            f"{result.stderr[-3000:]}\n--- daemon log (tail)\n{daemon_log}"
        )


# -- the systemd unit and its environment file ------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_unit_is_notify_reloads_with_sighup_and_is_hardened() -> None:
    unit = unit_settings()
    assert unit["Type"] == ["notify"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["EnvironmentFile"] == ["/etc/evidenceos/evidenceosd.env"]
    assert unit["User"] == ["evidenceos"]
    for key, expected in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter": "@system-service",
        "StateDirectoryMode": "0700",
        "UMask": "0077",
    }.items():
        assert unit.get(key) == [expected], key
    # wasmtime compiles guests to native code at run time: W^X would break execution.
    assert "MemoryDenyWriteExecute" not in unit


def test_unit_command_line_uses_real_flags_and_the_env_file_defines_them() -> None:
    (exec_start,) = unit_settings()["ExecStart"]
    env = env_example()
    for var in re.findall(r"\$\{?([A-Z_]+)\}?", exec_start):
        assert var in env, f"ExecStart uses {var}, which the example env file does not set"
    words = exec_start.split() + env["EVIDENCEOSD_OPTS"].split()
    assert words[0] == "/opt/evidenceos/venv/bin/evidenceosd"
    flags = {w for w in words if w.startswith("--")}
    help_text = subprocess.run(
        [str(BIN_DIR / "evidenceosd"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in flags:
        assert re.search(rf"(^|\s){re.escape(flag)}\b", help_text), f"unknown flag {flag}"
    known = (REPO_ROOT / "evidenceos").rglob("*.py")
    source = "\n".join(p.read_text(encoding="utf-8") for p in known)
    names = {k for k in env if k.startswith("EVIDENCEOS_") and k not in exec_start}
    commented = re.findall(r"^#(EVIDENCEOS_[A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE)
    for name in names | set(commented):
        stem = re.sub(r"(HOLDOUT_KEY_)[A-Z0-9_]+$", r"\1", name)
        assert stem in source, f"{name} in the env example is read nowhere in evidenceos/"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "evidenceosd.service"
    unit.write_text(UNIT.read_text().replace("/opt/evidenceos/venv/bin", str(BIN_DIR)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.process
@pytest.mark.skipif(sys.platform != "linux", reason="AF_UNIX datagram notify socket")
def test_ready_is_sent_only_when_serving(tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(20)
        daemon = DaemonProcess(tmp_path / "data", env={"NOTIFY_SOCKET": str(notify_path)})
        with daemon:
            daemon.spawn()
            message = notify.recv(4096)
            assert message == b"READY=1"
            # At READY=1 the port is bound and health says SERVING (no waiting needed).
            serving = daemon.wait_serving()
            channel = grpc.insecure_channel(str(serving["listen"]))
            try:
                from grpc_health.v1 import health_pb2, health_pb2_grpc

                status = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
                assert status.status == health_pb2.HealthCheckResponse.SERVING
            finally:
                channel.close()
            assert daemon.terminate() == 0
            assert notify.recv(4096) == b"STOPPING=1"
