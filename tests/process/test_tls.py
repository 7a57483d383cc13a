"""TLS and mutual TLS against the real daemon, with certificates made in the test
(spec 60 §2, §8 scenarios 19 to 21; DESIGN §6).

A CA, a server certificate for ``localhost``/127.0.0.1 and client certificates are generated
with ``cryptography``; a second, unrelated CA issues a rogue client certificate. The daemon's
view of the caller is read from its ``rpc_accepted`` debug log line (principal ids are hashes,
safe to log), and its authority from what it lets the caller do: GrantCredit needs the operator
role. Client-sent ``x-client-cert-*`` and role headers must change nothing.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evidenceos._proto.v2 import evidenceos_pb2 as pb
from evidenceos._proto.v2 import evidenceos_pb2_grpc as pb_grpc
from tests.support.daemon import DaemonPool, DaemonProcess, rpc_status, run_to_exit

pytestmark = pytest.mark.process

T = 10.0
TRANSPORT_FAILURES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN)
FORGED_HEADERS = (
    ("x-client-cert-fp", "0" * 64),
    ("x-client-cert-san", "operator"),
    ("x-evidenceos-auth-role", "operator"),
    ("x-evidenceos-token-scopes", "operator,auditor"),
)


# -- a small PKI ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER, lowercase hex: the daemon's definition (DESIGN §6)."""
        return hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Identity(key, cert)


def issue(
    ca: Identity, common_name: str, sans: Sequence[x509.GeneralName], *, server: bool
) -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return Identity(key, builder.sign(ca.key, hashes.SHA256()))


@dataclass(frozen=True)
class Pki:
    ca: Identity
    server: Identity
    agent: Identity  # SAN agent-a.clients.test
    bare: Identity  # no SAN: identified by its fingerprint
    operator: Identity  # allow-listed by fingerprint
    rogue: Identity  # issued by another CA
    ca_path: Path
    cert_path: Path
    key_path: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = make_ca("EvidenceOS test CA")
    server = issue(
        ca,
        "localhost",
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        server=True,
    )
    agent = issue(ca, "agent-a", [x509.DNSName("agent-a.clients.test")], server=False)
    bare = issue(ca, "bare-client", [], server=False)
    operator = issue(ca, "ops", [x509.DNSName("ops.clients.test")], server=False)
    rogue = issue(
        make_ca("Somebody else's CA"), "rogue", [x509.DNSName("agent-a.clients.test")], server=False
    )
    (root / "ca.crt").write_bytes(ca.cert_pem)
    (root / "server.crt").write_bytes(server.cert_pem)
    (root / "server.key").write_bytes(server.key_pem)
    (root / "server.key").chmod(0o600)
    return Pki(
        ca,
        server,
        agent,
        bare,
        operator,
        rogue,
        root / "ca.crt",
        root / "server.crt",
        root / "server.key",
    )


def tls_args(pki: Pki, *, mtls: bool) -> list[str]:
    args = ["--tls-cert", str(pki.cert_path), "--tls-key", str(pki.key_path)]
    if mtls:
        args += ["--mtls-client-ca", str(pki.ca_path), "--require-client-cert"]
    return args


def secure_channel(daemon: DaemonProcess, pki: Pki, client: Identity | None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert_pem,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    return grpc.secure_channel(
        daemon.address, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )


def health(channel: grpc.Channel) -> str:
    response = pb_grpc.EvidenceOSStub(channel).Health(pb.HealthRequest(), timeout=T)
    return str(response.status)


def expect_accepted(daemon: DaemonProcess, path_suffix: str, principal: str) -> None:
    """Fails unless the daemon logs a call to ``path_suffix`` accepted as ``principal``. Waits
    for the line: the log is read in the background, and the shared daemon logged other calls
    before this test's."""
    daemon.wait_for_log(
        lambda e: (
            e.get("event") == "rpc_accepted"
            and str(e.get("path", "")).endswith(path_suffix)
            and e.get("principal_id") == principal
        )
    )


def grant(channel: grpc.Channel, metadata: Sequence[tuple[str, str]] = ()) -> int:
    request = pb.GrantCreditRequest(principal_id="anonymous", amount=1, reason="tls test")
    response = pb_grpc.EvidenceOSStub(channel).GrantCredit(
        request, metadata=tuple(metadata), timeout=T
    )
    return int(response.credit_balance)


# -- TLS ----------------------------------------------------------------------------------------


def test_tls_listener_serves_tls_and_refuses_plaintext(daemons: DaemonPool, pki: Pki) -> None:
    daemon = daemons.start(extra_args=tls_args(pki, mtls=False))
    with secure_channel(daemon, pki, None) as channel:
        assert health(channel) == "SERVING"
        info = pb_grpc.EvidenceOSStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=T)
        assert info.feature_flags.tls_enabled
        assert not info.feature_flags.mtls_enabled
    with grpc.insecure_channel(daemon.address) as plaintext:
        code, _ = rpc_status(lambda: health(plaintext))
    assert code in TRANSPORT_FAILURES


# -- mTLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_daemon(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[DaemonProcess]:
    """One mTLS daemon for the checks below (none of them changes what the others see)."""
    data_dir = tmp_path_factory.mktemp("mtls-data")
    daemon = DaemonProcess(
        data_dir,
        extra_args=[*tls_args(pki, mtls=True), "--log", "debug"],
        env={"EVIDENCEOS_OPERATOR_CERT_FINGERPRINTS": pki.operator.fingerprint},
    )
    with daemon:
        yield daemon.start()


def test_mtls_accepts_a_client_certificate_from_its_ca(
    mtls_daemon: DaemonProcess, pki: Pki
) -> None:
    with secure_channel(mtls_daemon, pki, pki.agent) as channel:
        assert health(channel) == "SERVING"
        info = pb_grpc.EvidenceOSStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=T)
    assert info.feature_flags.tls_enabled and info.feature_flags.mtls_enabled
    expected = "mtls:" + hashlib.sha256(b"agent-a.clients.test").hexdigest()
    expect_accepted(mtls_daemon, "/GetServerInfo", expected)


def test_mtls_identity_without_san_is_the_der_fingerprint(
    mtls_daemon: DaemonProcess, pki: Pki
) -> None:
    with secure_channel(mtls_daemon, pki, pki.bare) as channel:
        assert health(channel) == "SERVING"
    expected = "mtls:" + hashlib.sha256(pki.bare.fingerprint.encode()).hexdigest()
    expect_accepted(mtls_daemon, "/Health", expected)


def test_mtls_refuses_a_client_without_certificate(mtls_daemon: DaemonProcess, pki: Pki) -> None:
    with secure_channel(mtls_daemon, pki, None) as channel:
        code, _ = rpc_status(lambda: health(channel))
    assert code in TRANSPORT_FAILURES


def test_mtls_refuses_a_certificate_from_another_ca(mtls_daemon: DaemonProcess, pki: Pki) -> None:
    with secure_channel(mtls_daemon, pki, pki.rogue) as channel:
        code, _ = rpc_status(lambda: health(channel))
    assert code in TRANSPORT_FAILURES


def test_mtls_refuses_plaintext(mtls_daemon: DaemonProcess) -> None:
    with grpc.insecure_channel(mtls_daemon.address) as plaintext:
        code, _ = rpc_status(lambda: health(plaintext))
    assert code in TRANSPORT_FAILURES


def test_forged_client_cert_headers_change_nothing(mtls_daemon: DaemonProcess, pki: Pki) -> None:
    forged = [*FORGED_HEADERS, ("x-client-cert-fp", pki.operator.fingerprint)]
    with secure_channel(mtls_daemon, pki, pki.agent) as channel:
        code, details = rpc_status(lambda: grant(channel, forged))
        assert (code, details) == (grpc.StatusCode.PERMISSION_DENIED, "operator role required")
        # Nor do they change who the caller is: still the certificate's principal.
        assert health(channel) == "SERVING"
    agent = "mtls:" + hashlib.sha256(b"agent-a.clients.test").hexdigest()
    forged_principals = {
        str(e["principal_id"])
        for e in mtls_daemon.events("rpc_accepted")
        if str(e.get("path", "")).endswith("/Health")
    }
    assert agent in forged_principals
    assert all(p.startswith("mtls:") for p in forged_principals)
    # The allow-listed certificate itself does hold the operator role.
    with secure_channel(mtls_daemon, pki, pki.operator) as channel:
        assert grant(channel) > 0


def test_forged_headers_grant_nothing_on_a_plaintext_listener(daemon: DaemonProcess) -> None:
    code, details = rpc_status(lambda: grant(daemon.channel(), FORGED_HEADERS))
    assert (code, details) == (grpc.StatusCode.PERMISSION_DENIED, "operator role required")


# -- start-up refusals --------------------------------------------------------------------------


def test_require_client_cert_without_tls_material_refuses_to_start(
    tmp_path: Path, pki: Pki
) -> None:
    data_dir = tmp_path / "data"
    exited = run_to_exit(
        data_dir, extra_args=["--mtls-client-ca", str(pki.ca_path), "--require-client-cert"]
    )
    assert exited.returncode != 0
    assert "--require-client-cert" in exited.stderr
    assert "--tls-cert" in exited.stderr
    assert not data_dir.exists()
