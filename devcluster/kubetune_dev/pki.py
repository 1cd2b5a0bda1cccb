"""Fresh certificates and keys for each dev cluster.

ECDSA P-256 everywhere: generation takes milliseconds (RSA-2048 takes noticeably longer), and
Go, Python's ssl, kubectl and Prometheus all accept it; the API server signs service-account tokens
with ES256.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)
# Names the API server answers to: loopback plus the in-cluster names pods use.
API_SERVER_DNS_NAMES: tuple[str, ...] = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class ClusterPki:
    ca: KeyPair
    apiserver: KeyPair
    admin: KeyPair
    controller_manager: KeyPair
    scheduler: KeyPair
    apiserver_kubelet_client: KeyPair
    agent: KeyPair
    front_proxy_client: KeyPair
    jobset_controller: KeyPair
    jobset_webhook: KeyPair
    service_account_key_pem: bytes
    service_account_pub_pem: bytes
    # The real node's identities (kubelet client and serving certificates, kube-proxy), if it has one.
    node: dict[str, KeyPair] = field(default_factory=dict)

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, pair in self.pairs().items():
            _write(directory / f"{name}.crt", pair.cert_pem, 0o644)
            _write(directory / f"{name}.key", pair.key_pem, 0o600)
        _write(directory / "sa.key", self.service_account_key_pem, 0o600)
        _write(directory / "sa.pub", self.service_account_pub_pem, 0o644)

    def pairs(self) -> dict[str, KeyPair]:
        return {
            "ca": self.ca,
            "apiserver": self.apiserver,
            "admin": self.admin,
            "kube-controller-manager": self.controller_manager,
            "kube-scheduler": self.scheduler,
            "apiserver-kubelet-client": self.apiserver_kubelet_client,
            "agent": self.agent,
            "front-proxy-client": self.front_proxy_client,
            "jobset-controller": self.jobset_controller,
            "jobset-webhook": self.jobset_webhook,
            **self.node,
        }


def _write(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _now() -> datetime.datetime:
    # Backdated a little so a cluster started right after a clock step still validates.
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)


def _certificate(
    key: ec.EllipticCurvePrivateKey, subject: x509.Name, issuer: x509.Name, *, ca: bool
) -> x509.CertificateBuilder:
    """What a CA and a leaf certificate share: validity, basic constraints and key usage."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(_now() + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def build_ca(common_name: str) -> tuple[KeyPair, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    name = _name(common_name)
    cert = (
        _certificate(key, name, name, ca=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)), key, cert


def build_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    common_name: str,
    organization: str | None = None,
    server: bool = False,
    client: bool = False,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
) -> KeyPair:
    key = _new_key()
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        _certificate(key, _name(common_name, organization), ca_cert.subject, ca=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass(frozen=True)
class NodeIdentity:
    """The real node the certificates are for: its Node name and the IP the API server dials."""

    name: str
    ip: str


def build_cluster_pki(
    *, service_cluster_ip: str, extra_ips: tuple[str, ...] = (), node: NodeIdentity | None = None
) -> ClusterPki:
    ca_pair, ca_key, ca_cert = build_ca("kubetune-dev-ca")

    def leaf(**kwargs: object) -> KeyPair:
        return build_leaf(ca_key, ca_cert, **kwargs)  # type: ignore[arg-type]

    sa_key = _new_key()
    return ClusterPki(
        ca=ca_pair,
        apiserver=leaf(
            common_name="kube-apiserver",
            server=True,
            dns_names=API_SERVER_DNS_NAMES,
            ip_addresses=("127.0.0.1", service_cluster_ip, *extra_ips),
        ),
        admin=leaf(common_name="kubetune-admin", organization="system:masters", client=True),
        # The identities kubeadm gives these components; RBAC's bootstrap policy has roles for them.
        controller_manager=leaf(common_name="system:kube-controller-manager", client=True),
        scheduler=leaf(common_name="system:kube-scheduler", client=True),
        apiserver_kubelet_client=leaf(
            common_name="kube-apiserver-kubelet-client", organization="system:masters", client=True
        ),
        # Serving certificate of the node agent's kubelet endpoint (`kubectl logs`).
        agent=leaf(
            common_name="kubetune-dev-agent", server=True, dns_names=("localhost",), ip_addresses=("127.0.0.1",)
        ),
        # The API server's identity towards aggregated API servers (request-header authentication).
        front_proxy_client=leaf(common_name="front-proxy-client", client=True),
        # A dev-cluster add-on, trusted as the control plane is (its release RBAC is not installed here).
        jobset_controller=leaf(common_name="jobset-controller", organization="system:masters", client=True),
        # The JobSet webhooks' serving certificate: the API server calls them at 127.0.0.1 (jobset.py).
        jobset_webhook=leaf(common_name="jobset-webhook", server=True, ip_addresses=("127.0.0.1",)),
        service_account_key_pem=_key_pem(sa_key),
        service_account_pub_pem=sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        node={} if node is None else _node_pairs(leaf, node),
    )


def _node_pairs(leaf: Callable[..., KeyPair], node: NodeIdentity) -> dict[str, KeyPair]:
    """What kubeadm gives a node: the kubelet's client identity in group system:nodes (the Node
    authorizer's subject), its serving certificate for the node IP, kube-proxy's identity (bound to
    system:node-proxier by RBAC's bootstrap policy)."""
    return {
        "kubelet-client": leaf(common_name=f"system:node:{node.name}", organization="system:nodes", client=True),
        "kubelet": leaf(
            common_name=f"system:node:{node.name}", server=True, dns_names=(node.name,), ip_addresses=(node.ip,)
        ),
        "kube-proxy": leaf(common_name="system:kube-proxy", client=True),
    }
