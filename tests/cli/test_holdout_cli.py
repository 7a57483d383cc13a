"""``evidenceosctl holdout encrypt|decrypt`` through click's ``CliRunner`` on real files
(spec 50 §3.10, §4.12). The group is mounted on a throwaway click group, as ctl mounts it;
payloads are checked with ``AESGCM`` directly, not only with our own decoder."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from evidenceos.cli.holdout import holdout
from evidenceos.store.holdouts import HoldoutRegistry

KEY = bytes(range(32))
KEY_HEX = KEY.hex()
KEY_ID = "lab-1"
KEY_VAR = "EVIDENCEOS_HOLDOUT_KEY_LAB_1"
LABELS = bytes([1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0])
EXIT_ERROR = 1
EXIT_USAGE = 2


@click.group()
def ctl() -> None:
    """Stand-in for evidenceosctl."""


ctl.add_command(holdout)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EVIDENCEOS_HOLDOUT_KEY_"):
            monkeypatch.delenv(name)


def run(*args: str, key: str | None = KEY_HEX, var: str = KEY_VAR) -> Result:
    env = {var: key} if key is not None else {}
    result = CliRunner().invoke(ctl, ["holdout", *args], env=env)
    # Never a traceback, never the key.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert KEY_HEX not in result.output
    return result


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def err(result: Result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    return result.stderr


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def labels_file(tmp_path: Path) -> Path:
    path = tmp_path / "labels.bin"
    path.write_bytes(LABELS)
    return path


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "holdout.key"
    path.write_text(KEY_HEX + "\n")
    os.chmod(path, 0o600)
    return path


def assert_no_labels(text: str) -> None:
    assert "\x00" not in text
    assert "\x01" not in text
    assert "".join(str(b) for b in LABELS) not in text


# -- round trips ------------------------------------------------------------------------------


def test_encrypt_then_decrypt_files(tmp_path: Path, labels_file: Path) -> None:
    enc = tmp_path / "labels.enc"
    result = ok(run("encrypt", "--in", str(labels_file), "--out", str(enc), "--key-id", KEY_ID))
    assert str(enc) in result.stdout
    payload = enc.read_bytes()
    assert payload[:6] == b"EHLD\x01\x02"
    assert AESGCM(KEY).decrypt(payload[6:18], payload[18:], None) == LABELS
    assert mode_of(enc) == 0o600

    out = tmp_path / "labels.out"
    result = ok(run("decrypt", "--in", str(enc), "--out", str(out), "--key-id", KEY_ID))
    assert out.read_bytes() == LABELS
    assert mode_of(out) == 0o600
    assert f"decrypted {len(LABELS)} labels" in result.stdout
    assert_no_labels(result.output)


def test_decrypt_without_out_prints_only_a_summary(tmp_path: Path, labels_file: Path) -> None:
    enc = tmp_path / "labels.enc"
    ok(run("encrypt", "--in", str(labels_file), "--out", str(enc), "--key-id", KEY_ID))
    result = ok(run("decrypt", "--in", str(enc), "--key-id", KEY_ID, "--json"))
    doc = json.loads(result.stdout)
    assert doc == {"status": "ok", "len": len(LABELS), "out": None}
    text = ok(run("decrypt", "--in", str(enc), "--key-id", KEY_ID))
    assert "labels not shown" in text.stdout
    assert_no_labels(text.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.bin", "labels.enc"]


def test_key_file_round_trip(tmp_path: Path, labels_file: Path, key_file: Path) -> None:
    enc = tmp_path / "labels.enc"
    ok(run("encrypt", "--in", str(labels_file), "--out", str(enc), "--key-file", str(key_file)))
    out = tmp_path / "labels.out"
    args = ("decrypt", "--in", str(enc), "--out", str(out), "--key-file", str(key_file))
    ok(run(*args, key=None))
    assert out.read_bytes() == LABELS


def test_two_encryptions_use_fresh_nonces(tmp_path: Path, labels_file: Path) -> None:
    a, b = tmp_path / "a.enc", tmp_path / "b.enc"
    ok(run("encrypt", "--in", str(labels_file), "--out", str(a), "--key-id", KEY_ID))
    ok(run("encrypt", "--in", str(labels_file), "--out", str(b), "--key-id", KEY_ID))
    assert a.read_bytes()[6:18] != b.read_bytes()[6:18]


def test_register_then_check_through_the_registry(data_dir: Path, labels_file: Path) -> None:
    result = ok(
        run(
            "encrypt",
            "--in",
            str(labels_file),
            "--ref",
            "prod-a",
            "--key-id",
            KEY_ID,
            "--k-bits-budget",
            "64",
            "--pool-scope",
            "per_principal",
            "--data-dir",
            str(data_dir),
            "--json",
        )
    )
    doc = json.loads(result.stdout)
    handle_hex = doc["holdout_handle_hex"]
    assert doc["status"] == "ok"
    assert doc["holdout_ref"] == "prod-a"
    assert doc["len"] == len(LABELS)
    assert "labels_sha256_hex" not in doc  # a small holdout's hash gives its labels away
    d = data_dir / "holdouts" / "prod-a"
    assert mode_of(d) == 0o700
    assert mode_of(d / "labels.enc") == 0o600
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["encryption_key_id"] == KEY_ID
    assert manifest["holdout_handle_hex"] == handle_hex
    assert manifest["labels_sha256_hex"] == hashlib.sha256(LABELS).hexdigest()
    assert manifest["holdout_k_bits_budget"] == 64.0
    assert manifest["holdout_pool_scope"] == "per_principal"

    # The daemon's view of it.
    h = HoldoutRegistry(
        data_dir, allow_plaintext=False, synthetic=False, env={KEY_VAR: KEY_HEX}
    ).resolve("prod-a")
    assert h.labels == LABELS
    assert h.handle.hex() == handle_hex

    checked = ok(run("decrypt", "--ref", "prod-a", "--data-dir", str(data_dir), "--json"))
    assert json.loads(checked.stdout) == {
        "status": "ok",
        "holdout_ref": "prod-a",
        "holdout_handle_hex": handle_hex,
        "len": len(LABELS),
        "out": None,
    }
    out = data_dir.parent / "exported.bin"
    args = ("decrypt", "--ref", "prod-a", "--data-dir", str(data_dir), "--out", str(out))
    ok(run(*args))
    assert out.read_bytes() == LABELS


def test_register_human_output_names_the_variable(data_dir: Path, labels_file: Path) -> None:
    args = ("encrypt", "--in", str(labels_file), "--ref", "r1", "--key-id", KEY_ID)
    result = ok(run(*args, "--data-dir", str(data_dir)))
    assert KEY_VAR in result.stdout
    assert "registered holdout r1" in result.stdout


# -- errors -----------------------------------------------------------------------------------


def test_missing_key_variable(tmp_path: Path, labels_file: Path) -> None:
    args = ("encrypt", "--in", str(labels_file), "--out", str(tmp_path / "x"), "--key-id", KEY_ID)
    err(run(*args, key=None), EXIT_ERROR, "holdout key for encryption_key_id not found", KEY_VAR)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("value", ["", "abcd", "zz" * 32, KEY_HEX + "00"])
def test_bad_key_material(tmp_path: Path, labels_file: Path, value: str) -> None:
    args = ("encrypt", "--in", str(labels_file), "--out", str(tmp_path / "x"), "--key-id", KEY_ID)
    stderr = err(run(*args, key=value), EXIT_ERROR, "invalid holdout key material", KEY_VAR)
    if value:
        assert value not in stderr


@pytest.mark.parametrize("key_id", ["bad id", "a.b", "x" * 129])
def test_bad_key_id(tmp_path: Path, labels_file: Path, key_id: str) -> None:
    args = ("encrypt", "--in", str(labels_file), "--out", str(tmp_path / "x"), "--key-id", key_id)
    err(run(*args), EXIT_USAGE, "invalid holdout encryption_key_id")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "[1,4096]"),
        (b"0101", "binary"),
        (b"\x00\x02", "binary"),
        (b"\x01" * 4097, "[1,4096]"),
    ],
)
def test_bad_label_files(tmp_path: Path, content: bytes, fragment: str) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(content)
    args = ("encrypt", "--in", str(src), "--out", str(tmp_path / "x"), "--key-id", KEY_ID)
    err(run(*args), EXIT_USAGE, fragment)
    assert not (tmp_path / "x").exists()


def test_decrypt_with_wrong_key(tmp_path: Path, labels_file: Path) -> None:
    enc = tmp_path / "labels.enc"
    ok(run("encrypt", "--in", str(labels_file), "--out", str(enc), "--key-id", KEY_ID))
    out = tmp_path / "out.bin"
    args = ("decrypt", "--in", str(enc), "--out", str(out), "--key-id", KEY_ID)
    err(run(*args, key=bytes(32).hex()), EXIT_ERROR, "holdout decrypt failed")
    assert not out.exists()


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda p: p[:20], "holdout payload too short"),
        (lambda p: b"XHLD" + p[4:], "unsupported holdout encryption format"),
        (lambda p: p[:4] + b"\x02" + p[5:], "unsupported holdout encryption format"),
        (lambda p: p[:-1] + bytes([p[-1] ^ 1]), "holdout decrypt failed"),
        (lambda p: p[:-1], "holdout decrypt failed"),
        (lambda p: p[:20] + bytes([p[20] ^ 0x80]) + p[21:], "holdout decrypt failed"),
    ],
)
def test_decrypt_refuses_tampered_files(
    tmp_path: Path, labels_file: Path, mutate: object, fragment: str
) -> None:
    enc = tmp_path / "labels.enc"
    ok(run("encrypt", "--in", str(labels_file), "--out", str(enc), "--key-id", KEY_ID))
    assert callable(mutate)
    enc.write_bytes(mutate(enc.read_bytes()))
    err(run("decrypt", "--in", str(enc), "--key-id", KEY_ID), EXIT_ERROR, fragment)


def test_key_file_too_open(tmp_path: Path, labels_file: Path, key_file: Path) -> None:
    os.chmod(key_file, 0o644)
    args = ("encrypt", "--in", str(labels_file), "--out", str(tmp_path / "x"))
    err(run(*args, "--key-file", str(key_file)), EXIT_ERROR, "chmod 600")


def test_key_file_with_bad_content(tmp_path: Path, labels_file: Path, key_file: Path) -> None:
    key_file.write_text("not a key\n")
    args = ("encrypt", "--in", str(labels_file), "--out", str(tmp_path / "x"))
    err(run(*args, "--key-file", str(key_file)), EXIT_ERROR, "invalid holdout key material")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ((), "--out PATH"),
        (("--out", "o", "--ref", "r", "--key-id", KEY_ID), "not both"),
        (("--ref", "r"), "--ref needs --key-id"),
        (("--out", "o", "--k-bits-budget", "1"), "need --ref"),
        (("--out", "o", "--pool-scope", "global"), "need --ref"),
        (("--out", "o"), "--key-id"),
        (("--out", "o", "--pool-scope", "everyone"), "everyone"),
    ],
)
def test_encrypt_usage_errors(
    tmp_path: Path, labels_file: Path, extra: tuple[str, ...], fragment: str
) -> None:
    result = CliRunner().invoke(
        ctl, ["holdout", "encrypt", "--in", str(labels_file), *extra], env={KEY_VAR: KEY_HEX}
    )
    assert result.exit_code == EXIT_USAGE, result.output
    assert fragment in result.stderr


def test_encrypt_needs_input(tmp_path: Path) -> None:
    result = run("encrypt", "--out", str(tmp_path / "x"), "--key-id", KEY_ID)
    err(result, EXIT_USAGE, "--in")
    result = run("encrypt", "--in", str(tmp_path / "absent"), "--out", "x", "--key-id", KEY_ID)
    err(result, EXIT_USAGE, "absent")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ((), "--in PATH"),
        (("--in", "IN", "--ref", "r"), "not both"),
        (("--ref", "r", "--key-id", KEY_ID), "drop --key-id/--key-file"),
        (("--in", "IN"), "--key-id"),
    ],
)
def test_decrypt_usage_errors(
    tmp_path: Path, labels_file: Path, extra: tuple[str, ...], fragment: str
) -> None:
    args = [str(labels_file) if a == "IN" else a for a in extra]
    err(run("decrypt", *args), EXIT_USAGE, fragment)


def test_register_refuses_an_existing_ref(data_dir: Path, labels_file: Path) -> None:
    args = ("encrypt", "--in", str(labels_file), "--ref", "r1", "--key-id", KEY_ID)
    ok(run(*args, "--data-dir", str(data_dir)))
    before = (data_dir / "holdouts" / "r1" / "manifest.json").read_bytes()
    err(run(*args, "--data-dir", str(data_dir)), EXIT_ERROR, "already exists")
    assert (data_dir / "holdouts" / "r1" / "manifest.json").read_bytes() == before


def test_register_refuses_a_bad_ref(data_dir: Path, labels_file: Path) -> None:
    args = ("encrypt", "--in", str(labels_file), "--ref", "../x", "--key-id", KEY_ID)
    err(run(*args, "--data-dir", str(data_dir)), EXIT_USAGE, "holdout_ref must match")


def test_check_unknown_ref(data_dir: Path) -> None:
    args = ("decrypt", "--ref", "nope", "--data-dir", str(data_dir))
    err(run(*args), EXIT_USAGE, "unknown holdout_ref")


def test_check_ref_without_key(data_dir: Path, labels_file: Path) -> None:
    args = ("encrypt", "--in", str(labels_file), "--ref", "r1", "--key-id", KEY_ID)
    ok(run(*args, "--data-dir", str(data_dir)))
    result = run("decrypt", "--ref", "r1", "--data-dir", str(data_dir), key=None)
    err(result, EXIT_ERROR, "holdout key lookup failed", KEY_VAR)


def test_check_ref_with_loose_modes(data_dir: Path, labels_file: Path) -> None:
    args = ("encrypt", "--in", str(labels_file), "--ref", "r1", "--key-id", KEY_ID)
    ok(run(*args, "--data-dir", str(data_dir)))
    os.chmod(data_dir / "holdouts" / "r1" / "labels.enc", 0o644)
    result = run("decrypt", "--ref", "r1", "--data-dir", str(data_dir))
    err(result, EXIT_ERROR, "permissions must be 0600", "chmod 600")


def test_unwritable_out(tmp_path: Path, labels_file: Path) -> None:
    out = tmp_path / "missing-dir" / "x.enc"
    args = ("encrypt", "--in", str(labels_file), "--out", str(out), "--key-id", KEY_ID)
    err(run(*args), EXIT_ERROR, "cannot write")


# -- help -------------------------------------------------------------------------------------


def test_help() -> None:
    group = ok(run("--help"))
    assert "encrypt" in group.stdout
    assert "decrypt" in group.stdout
    for command in ("encrypt", "decrypt"):
        text = ok(run(command, "--help")).stdout
        for flag in ("--in", "--out", "--ref", "--key-id", "--key-file", "--data-dir", "--json"):
            assert flag in text
