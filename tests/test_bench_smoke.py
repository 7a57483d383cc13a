"""The benchmark runner works end to end at tiny sizes. Timings are never asserted here: speed is
judged by ``python -m ops.bench.run`` (``make bench``), as ratios within one run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from ops.bench import execute
from tests.support.paths import REPO_ROOT

RATIO_LINE = re.compile(
    r"^(?P<name>proofs\.(?:inclusion|consistency))\s+\S+ us/call\s+\S+ us/call\s+"
    r"(?P<ratio>\d+\.\d+)\s+<= 3\s+(?:PASS|FAIL)$",
    re.MULTILINE,
)


def _bench(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.bench.run", "--tmp-dir", str(tmp_path / "work"), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_quick_proofs_bench_prints_ratios_and_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = _bench(
        "--quick",
        "--only",
        "proofs",
        "--sizes",
        "64,700",
        "--json-out",
        str(out),
        tmp_path=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {m["name"] for m in RATIO_LINE.finditer(proc.stdout)} == {
        "proofs.inclusion",
        "proofs.consistency",
    }, proc.stdout
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["mode"] == "quick"
    assert doc["crashed"] == []
    (proofs,) = (b for b in doc["benchmarks"] if b["name"] == "proofs")
    for check in proofs["checks"]:
        assert check["ratio"] > 0
        assert check["target"] == "<= 3"
        assert isinstance(check["passed"], bool)
    assert not list((tmp_path / "work").iterdir()), "the run's temporary directory was left behind"


def test_unknown_benchmark_is_a_usage_error(tmp_path: Path) -> None:
    proc = _bench("--only", "nope", tmp_path=tmp_path)
    assert proc.returncode == 2
    assert "unknown benchmark" in proc.stderr


def test_execute_bench_client_talks_to_the_echo_server() -> None:
    """The execute benchmark's own processes (client, echo server) and their JSON protocol; the
    daemon side is covered by tests/process. Counts only, never timings."""
    echo = execute.start_echo_server(workers=4)
    client = execute.ClientProcess()
    try:
        target = echo.wait_serving()
        reply = client.call(op="echo", target=target, callers=4, calls=40, payload_bytes=64)
    finally:
        client.close()
        echo.stop()
    assert reply["calls"] == 40
    assert len(reply["latencies_us"]) == 40
    assert all(latency > 0 for latency in reply["latencies_us"])
    assert client.proc.returncode == 0
