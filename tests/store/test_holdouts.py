"""The holdout registry on real files (spec 30 §6, spec 20 §3.4 step 8).

Holdout directories are built by hand here (``json``, ``AESGCM``, ``os.chmod``) so the registry
is checked against the layout itself, not against our own writer; the writer gets its own tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from evidenceos.core.holdout import synthetic_holdout
from evidenceos.errors import AlreadyExists, Code, FailedPrecondition, InvalidArgument
from evidenceos.store.holdouts import (
    HoldoutRegistry,
    load_key_file,
    write_encrypted_holdout,
    write_label_file,
)

KEY = bytes(range(32))
KEY_ID = "lab-1"
KEY_VAR = "EVIDENCEOS_HOLDOUT_KEY_LAB_1"
ENV = {KEY_VAR: KEY.hex()}
LABELS = bytes([1, 0, 0, 1, 1, 1, 0, 1])
HANDLE = bytes([7]) * 32

MakeHoldout = Callable[..., Path]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def seal(labels: bytes, key: bytes = KEY, nonce: bytes = b"\x05" * 12) -> bytes:
    return b"EHLD\x01\x02" + nonce + AESGCM(key).encrypt(nonce, labels, None)


@pytest.fixture(autouse=True)
def _umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def make_holdout(data_dir: Path) -> MakeHoldout:
    """Write ``holdouts/<ref>/`` by hand: manifest plus labels.enc (or labels.bin)."""

    def make(
        ref: str = "h1",
        labels: bytes = LABELS,
        *,
        encrypted: bool = True,
        payload: bytes | None = None,
        dir_mode: int = 0o700,
        file_mode: int = 0o600,
        **manifest: Any,
    ) -> Path:
        d = data_dir / "holdouts" / ref
        d.mkdir(parents=True, exist_ok=True)
        name = "labels.enc" if encrypted else "labels.bin"
        body = payload if payload is not None else (seal(labels) if encrypted else labels)
        (d / name).write_bytes(body)
        doc: dict[str, Any] = {
            "schema_version": 1,
            "holdout_handle_hex": HANDLE.hex(),
            "len": len(labels),
            "labels_sha256_hex": hashlib.sha256(labels).hexdigest(),
            "created_at_unix": 1_700_000_000,
            "encryption_key_id": KEY_ID if encrypted else None,
        }
        doc.update(manifest)
        (d / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")
        os.chmod(d / name, file_mode)
        os.chmod(d, dir_mode)
        return d

    return make


def registry(
    data_dir: Path,
    *,
    allow_plaintext: bool = False,
    synthetic: bool = False,
    env: dict[str, str] | None = None,
) -> HoldoutRegistry:
    return HoldoutRegistry(
        data_dir,
        allow_plaintext=allow_plaintext,
        synthetic=synthetic,
        env=ENV if env is None else env,
    )


def failed(fn: Callable[[], object]) -> str:
    with pytest.raises(FailedPrecondition) as err:
        fn()
    assert err.value.code is Code.FAILED_PRECONDITION
    return err.value.message


# -- the happy paths --------------------------------------------------------------------------


def test_encrypted_holdout_resolves_with_env_key(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout(
        "h1", holdout_k_bits_budget=8.5, holdout_access_credit_budget=2, holdout_pool_scope="both"
    )
    h = registry(data_dir).resolve("h1")
    assert h.labels == LABELS
    assert h.handle == HANDLE
    assert h.length == len(LABELS)
    assert h.ref == "h1"
    assert (h.k_bits_budget, h.access_credit_budget, h.pool_scope) == (8.5, 2.0, "both")


def test_describe_needs_no_key(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("h1")
    d = registry(data_dir, env={}).describe("h1")
    assert (d.ref, d.handle, d.length) == ("h1", HANDLE, len(LABELS))


def test_plaintext_needs_allow_plaintext(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("dev", encrypted=False)
    message = failed(lambda: registry(data_dir).resolve("dev"))
    assert message.startswith("plaintext holdouts disabled")
    assert "--allow-plaintext-holdouts" in message
    h = registry(data_dir, allow_plaintext=True).resolve("dev")
    assert h.labels == LABELS


def test_plaintext_switch_does_not_bypass_encryption(
    data_dir: Path, make_holdout: MakeHoldout
) -> None:
    """A manifest with a key id always reads labels.enc, even with a labels.bin beside it."""
    d = make_holdout("h1")
    (d / "labels.bin").write_bytes(b"\x00" * len(LABELS))
    os.chmod(d / "labels.bin", 0o600)
    assert registry(data_dir, allow_plaintext=True).resolve("h1").labels == LABELS


# -- refs and modes ---------------------------------------------------------------------------


def test_unknown_ref_is_invalid_argument(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("h1")
    for ref in ("nope", "H1"):
        with pytest.raises(InvalidArgument) as err:
            registry(data_dir).resolve(ref)
        assert err.value.message == "unknown holdout_ref"
        with pytest.raises(InvalidArgument, match=r"^unknown holdout_ref$"):
            registry(data_dir).describe(ref)


def test_no_holdouts_dir_at_all(data_dir: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"^unknown holdout_ref$"):
        registry(data_dir).resolve("h1")


def test_dir_without_manifest_is_unknown(data_dir: Path) -> None:
    (data_dir / "holdouts" / "h1").mkdir(parents=True)
    with pytest.raises(InvalidArgument, match=r"^unknown holdout_ref$"):
        registry(data_dir).resolve("h1")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "holdout_ref must be in [1,128]"),
        ("x" * 129, "holdout_ref must be in [1,128]"),
        ("../h1", "holdout_ref must match [A-Za-z0-9_-]+"),
        ("h1/", "holdout_ref must match [A-Za-z0-9_-]+"),
    ],
)
def test_invalid_refs(data_dir: Path, make_holdout: MakeHoldout, ref: str, message: str) -> None:
    make_holdout("h1")
    with pytest.raises(InvalidArgument) as err:
        registry(data_dir).resolve(ref)
    assert err.value.message == message


@pytest.mark.parametrize("dir_mode", [0o755, 0o750, 0o701, 0o500, 0o770])
def test_directory_must_be_exactly_0700(
    data_dir: Path, make_holdout: MakeHoldout, dir_mode: int
) -> None:
    d = make_holdout("h1", dir_mode=dir_mode)
    try:
        message = failed(lambda: registry(data_dir).resolve("h1"))
    finally:
        os.chmod(d, 0o700)
    assert message.startswith("holdout directory permissions must be 0700")
    assert f"is {dir_mode:04o}" in message
    assert "chmod 700" in message


def test_only_permission_bits_count(data_dir: Path, make_holdout: MakeHoldout) -> None:
    """setgid/sticky are ignored (mode & 0o777, as in the reference): GNU `chmod 700` keeps an
    inherited setgid bit on directories, so counting it would make the check unsatisfiable."""
    d = make_holdout("h1")
    os.chmod(d, 0o2700)
    assert registry(data_dir).resolve("h1").labels == LABELS
    os.chmod(d, 0o1700)
    assert registry(data_dir).resolve("h1").labels == LABELS


@pytest.mark.parametrize("file_mode", [0o644, 0o640, 0o400, 0o700, 0o604])
def test_label_file_must_be_exactly_0600(
    data_dir: Path, make_holdout: MakeHoldout, file_mode: int
) -> None:
    make_holdout("h1", file_mode=file_mode)
    message = failed(lambda: registry(data_dir).resolve("h1"))
    assert message.startswith("holdout label file permissions must be 0600")
    assert "chmod 600" in message


def test_plaintext_file_modes_are_enforced_too(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("dev", encrypted=False, file_mode=0o644)
    message = failed(lambda: registry(data_dir, allow_plaintext=True).resolve("dev"))
    assert "labels.bin" in message
    assert "0600" in message


def test_missing_label_file(data_dir: Path, make_holdout: MakeHoldout) -> None:
    d = make_holdout("h1")
    (d / "labels.enc").unlink()
    message = failed(lambda: registry(data_dir).resolve("h1"))
    assert message.startswith("holdout labels read failed")
    assert "labels.enc is missing" in message


# -- keys and decryption ----------------------------------------------------------------------


def test_missing_key_fails_closed(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("h1")
    message = failed(lambda: registry(data_dir, env={}).resolve("h1"))
    assert message.startswith("holdout key lookup failed")
    assert KEY_VAR in message


@pytest.mark.parametrize("value", ["", "00" * 31, "zz" * 32, KEY.hex() + "\n"])
def test_bad_key_material(data_dir: Path, make_holdout: MakeHoldout, value: str) -> None:
    make_holdout("h1")
    message = failed(lambda: registry(data_dir, env={KEY_VAR: value}).resolve("h1"))
    assert message.startswith("holdout key lookup failed")
    assert "invalid holdout key material" in message


def test_manifest_key_id_with_bad_charset(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("h1", encryption_key_id="aws|arn")
    message = failed(lambda: registry(data_dir).resolve("h1"))
    assert message.startswith("holdout key lookup failed")
    assert "invalid holdout encryption_key_id" in message


def test_wrong_key(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("h1")
    env = {KEY_VAR: bytes(32).hex()}
    message = failed(lambda: registry(data_dir, env=env).resolve("h1"))
    assert message.startswith("holdout labels decrypt failed")
    assert "holdout decrypt failed" in message


@pytest.mark.parametrize("index", [0, 4, 5, 6, 17, 18, 20, -1])
def test_tampered_labels_enc(data_dir: Path, make_holdout: MakeHoldout, index: int) -> None:
    payload = bytearray(seal(LABELS))
    payload[index] ^= 0x01
    make_holdout("h1", payload=bytes(payload))
    assert failed(lambda: registry(data_dir).resolve("h1")).startswith(
        "holdout labels decrypt failed"
    )


def test_truncated_labels_enc(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("h1", payload=seal(LABELS)[:30])
    message = failed(lambda: registry(data_dir).resolve("h1"))
    assert message.startswith("holdout labels decrypt failed")
    assert "holdout payload too short" in message


# -- manifest consistency ---------------------------------------------------------------------


def test_length_mismatch(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("h1", len=len(LABELS) + 1)
    assert failed(lambda: registry(data_dir).resolve("h1")).startswith(
        "holdout label length mismatch"
    )


def test_sha_mismatch(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("h1", labels_sha256_hex=hashlib.sha256(b"other").hexdigest())
    assert failed(lambda: registry(data_dir).resolve("h1")).startswith(
        "holdout label hash mismatch"
    )


def test_sha_must_be_of_decrypted_labels(data_dir: Path, make_holdout: MakeHoldout) -> None:
    payload = seal(LABELS)
    make_holdout("h1", payload=payload, labels_sha256_hex=hashlib.sha256(payload).hexdigest())
    assert "hash mismatch" in failed(lambda: registry(data_dir).resolve("h1"))


def test_non_binary_plaintext(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("dev", labels=b"\x00\x01\x02", encrypted=False)
    message = failed(lambda: registry(data_dir, allow_plaintext=True).resolve("dev"))
    assert message.startswith("holdout labels must be binary")


def test_oversized_label_file_is_a_length_mismatch(
    data_dir: Path, make_holdout: MakeHoldout
) -> None:
    make_holdout("dev", labels=b"\x01" * 4096, encrypted=False)
    (data_dir / "holdouts" / "dev" / "labels.bin").write_bytes(b"\x01" * 100_000)
    message = failed(lambda: registry(data_dir, allow_plaintext=True).resolve("dev"))
    assert message.startswith("holdout label length mismatch")


def test_invalid_manifest_names_the_file(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("h1", created_at_unix=0)
    reg = registry(data_dir)
    for message in (failed(lambda: reg.resolve("h1")), failed(lambda: reg.describe("h1"))):
        assert "created_at_unix" in message
        assert "holdouts/h1/manifest.json" in message


def test_manifest_schema_version(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("h1", schema_version=2)
    assert "unsupported holdout manifest schema_version" in failed(
        lambda: registry(data_dir).describe("h1")
    )


# -- synthetic mode ---------------------------------------------------------------------------


def test_synthetic_mode(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("h1")
    reg = registry(data_dir, synthetic=True, env={})
    assert reg.synthetic
    h = reg.resolve("synthetic-holdout")
    assert h == synthetic_holdout("synthetic-holdout")
    assert reg.describe("synthetic-holdout") == h.descriptor
    # The registry is not consulted in synthetic mode, as in the reference.
    with pytest.raises(InvalidArgument, match=r"^unknown holdout_ref$"):
        reg.resolve("h1")


def test_synthetic_refs_are_unknown_in_registry_mode(data_dir: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"^unknown holdout_ref$"):
        registry(data_dir).resolve("synthetic-holdout")


# -- cache ------------------------------------------------------------------------------------


def test_cached_until_files_change(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("h1")
    reg = registry(data_dir)
    first = reg.resolve("h1")
    assert reg.resolve("h1") is first

    new_labels = bytes([0, 0, 1, 1])
    d = data_dir / "holdouts" / "h1"
    tmp = d / "labels.enc.new"
    tmp.write_bytes(seal(new_labels, nonce=b"\x06" * 12))
    os.chmod(tmp, 0o600)
    os.replace(tmp, d / "labels.enc")
    doc = json.loads((d / "manifest.json").read_text())
    doc.update(len=4, labels_sha256_hex=hashlib.sha256(new_labels).hexdigest())
    (d / "manifest.json").write_text(json.dumps(doc))
    second = reg.resolve("h1")
    assert second.labels == new_labels
    assert second.length == 4


def test_manifest_change_alone_reloads(data_dir: Path, make_holdout: MakeHoldout) -> None:
    make_holdout("h1")
    reg = registry(data_dir)
    assert reg.resolve("h1").k_bits_budget is None
    d = data_dir / "holdouts" / "h1"
    doc = json.loads((d / "manifest.json").read_text())
    doc["holdout_k_bits_budget"] = 3.0
    (d / "manifest.json").write_text(json.dumps(doc))
    assert reg.resolve("h1").k_bits_budget == 3.0


def test_cache_never_skips_the_checks(data_dir: Path, make_holdout: MakeHoldout) -> None:
    d = make_holdout("h1")
    env = dict(ENV)
    reg = registry(data_dir, env=env)
    reg.resolve("h1")
    os.chmod(d / "labels.enc", 0o644)
    assert "0600" in failed(lambda: reg.resolve("h1"))
    os.chmod(d / "labels.enc", 0o600)
    del env[KEY_VAR]
    assert failed(lambda: reg.resolve("h1")).startswith("holdout key lookup failed")
    env[KEY_VAR] = bytes(32).hex()
    assert failed(lambda: reg.resolve("h1")).startswith("holdout labels decrypt failed")
    env[KEY_VAR] = KEY.hex()
    assert reg.resolve("h1").labels == LABELS
    (d / "manifest.json").unlink()
    with pytest.raises(InvalidArgument, match=r"^unknown holdout_ref$"):
        reg.resolve("h1")


# -- writing ----------------------------------------------------------------------------------


def test_write_encrypted_holdout_layout(data_dir: Path) -> None:
    manifest = write_encrypted_holdout(
        data_dir, "new-1", LABELS, KEY_ID, KEY, 1_700_000_123, k_bits_budget=4.0
    )
    d = data_dir / "holdouts" / "new-1"
    assert sorted(p.name for p in d.iterdir()) == ["labels.enc", "manifest.json"]
    assert mode_of(d) == 0o700
    assert mode_of(d / "labels.enc") == 0o600
    assert mode_of(d / "manifest.json") == 0o600
    doc = json.loads((d / "manifest.json").read_text())
    assert doc["schema_version"] == 1
    assert doc["len"] == len(LABELS)
    assert doc["labels_sha256_hex"] == hashlib.sha256(LABELS).hexdigest()
    assert doc["created_at_unix"] == 1_700_000_123
    assert doc["encryption_key_id"] == KEY_ID
    assert doc["holdout_k_bits_budget"] == 4.0
    assert doc["holdout_handle_hex"] == manifest.holdout_handle.hex()
    # Independent decryption of what was written.
    payload = (d / "labels.enc").read_bytes()
    assert payload[:6] == b"EHLD\x01\x02"
    assert AESGCM(KEY).decrypt(payload[6:18], payload[18:], None) == LABELS
    assert registry(data_dir).resolve("new-1").labels == LABELS


def test_write_uses_random_handles_and_nonces(data_dir: Path) -> None:
    a = write_encrypted_holdout(data_dir, "a", LABELS, KEY_ID, KEY, 1)
    b = write_encrypted_holdout(data_dir, "b", LABELS, KEY_ID, KEY, 1)
    assert a.holdout_handle != b.holdout_handle
    enc_a = (data_dir / "holdouts" / "a" / "labels.enc").read_bytes()
    enc_b = (data_dir / "holdouts" / "b" / "labels.enc").read_bytes()
    assert enc_a[6:18] != enc_b[6:18]


def test_write_with_strict_umask(data_dir: Path) -> None:
    os.umask(0o777)
    write_encrypted_holdout(data_dir, "u", LABELS, KEY_ID, KEY, 1, holdout_handle=HANDLE)
    os.umask(0o022)
    d = data_dir / "holdouts" / "u"
    assert mode_of(d) == 0o700
    assert mode_of(d / "labels.enc") == 0o600
    assert registry(data_dir).resolve("u").handle == HANDLE


def test_write_fixes_a_leftover_directory(data_dir: Path) -> None:
    d = data_dir / "holdouts" / "x"
    d.mkdir(parents=True, mode=0o755)
    os.chmod(d, 0o755)  # noqa: S103 - a leftover directory with a too-broad mode
    write_encrypted_holdout(data_dir, "x", LABELS, KEY_ID, KEY, 1)
    assert mode_of(d) == 0o700
    assert registry(data_dir).resolve("x").labels == LABELS


def test_write_never_replaces_a_holdout(data_dir: Path) -> None:
    write_encrypted_holdout(data_dir, "h", LABELS, KEY_ID, KEY, 1)
    before = (data_dir / "holdouts" / "h" / "labels.enc").read_bytes()
    with pytest.raises(AlreadyExists, match=r"already exists"):
        write_encrypted_holdout(data_dir, "h", b"\x00", KEY_ID, KEY, 1)
    assert (data_dir / "holdouts" / "h" / "labels.enc").read_bytes() == before


@pytest.mark.parametrize(
    ("ref", "labels", "key_id", "key", "created", "error"),
    [
        ("a/b", LABELS, KEY_ID, KEY, 1, InvalidArgument),
        ("h", b"", KEY_ID, KEY, 1, InvalidArgument),
        ("h", b"\x02", KEY_ID, KEY, 1, InvalidArgument),
        ("h", b"\x01" * 4097, KEY_ID, KEY, 1, InvalidArgument),
        ("h", LABELS, "bad id", KEY, 1, InvalidArgument),
        ("h", LABELS, KEY_ID, KEY[:31], 1, InvalidArgument),
        ("h", LABELS, KEY_ID, KEY, 0, FailedPrecondition),
    ],
)
def test_write_validates_before_touching_disk(
    data_dir: Path,
    ref: str,
    labels: bytes,
    key_id: str,
    key: bytes,
    created: int,
    error: type[Exception],
) -> None:
    with pytest.raises(error):
        write_encrypted_holdout(data_dir, ref, labels, key_id, key, created)
    assert not (data_dir / "holdouts").exists()


# -- key files and label files ----------------------------------------------------------------


def test_load_key_file(tmp_path: Path) -> None:
    path = tmp_path / "k.hex"
    path.write_text(KEY.hex() + "\n")
    os.chmod(path, 0o600)
    assert load_key_file(path) == KEY
    os.chmod(path, 0o400)
    assert load_key_file(path) == KEY


def test_load_key_file_refuses_broad_modes(tmp_path: Path) -> None:
    path = tmp_path / "k.hex"
    path.write_text(KEY.hex())
    os.chmod(path, 0o644)
    message = failed(lambda: load_key_file(path))
    assert "chmod 600" in message


@pytest.mark.parametrize("content", [b"", b"00" * 31, b"\xff" * 64, b"zz" * 32])
def test_load_key_file_refuses_bad_content(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k.hex"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    assert "invalid holdout key material" in failed(lambda: load_key_file(path))


def test_load_key_file_missing(tmp_path: Path) -> None:
    assert "cannot read key file" in failed(lambda: load_key_file(tmp_path / "absent"))


def test_write_label_file_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    write_label_file(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert mode_of(path) == 0o600
    assert "cannot write" in failed(lambda: write_label_file(tmp_path / "no" / "x", b"\x00"))
