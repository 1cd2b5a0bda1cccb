"""What every kubetune client of the Kubernetes API shares: credentials that refresh, one error type, paths.

Two transports sit on top: `k8s.client.KubeClient` (asyncio, aiohttp) for the operator and
`k8s.sync.KubeApi` (threads, urllib3) for the CLI, the dev cluster and its node agent. Both speak
plain JSON dicts and raise the same `ApiError` family, so code and tests read the same either way.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

Json = dict[str, Any]

IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
TOKEN_FILE_REREAD_SECONDS = 60.0  # the kubelet rotates projected tokens well before they expire


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """A non-2xx answer from the API server, or a failed connection (status 0).

    Callers catch the subclass they can act on (`except NotFound:`); everything else is an ApiError.
    """

    def __init__(self, status: int, reason: str, message: str, body: Json | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}


class NotFound(ApiError):
    """404."""


class AlreadyExists(ApiError):
    """409 with reason AlreadyExists (a create of a name that is taken)."""


class Conflict(ApiError):
    """409 otherwise: a write against a stale resourceVersion."""


class Gone(ApiError):
    """410: a watch or list continued from a resourceVersion the server no longer has."""


class Unauthorized(ApiError):
    """401: the credentials were refused (an expired or rotated token)."""


def api_error(status: int, payload: Any) -> ApiError:
    """The ApiError subclass for a status and its (Status object) payload."""
    body = payload if isinstance(payload, dict) else {"message": str(payload)}
    reason, message = str(body.get("reason", "")), str(body.get("message", ""))
    kind: type[ApiError] = ApiError
    if status == 404:
        kind = NotFound
    elif status == 409:
        kind = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif status == 410:
        kind = Gone
    elif status == 401:
        kind = Unauthorized
    return kind(status, reason, message, body)


def decode(status: int, data: bytes | str) -> Json:
    """A response body as a dict (a bare list becomes {"items": [...]}); raises the ApiError of a non-2xx."""
    try:
        payload: Any = json.loads(data) if data else {}
    except ValueError:
        text = data.decode(errors="replace") if isinstance(data, bytes) else data
        payload = {"message": text[:500]}
    if not isinstance(payload, dict):
        payload = {"items": payload}
    if status >= 300:
        raise api_error(status, payload)
    result: Json = payload
    return result


# --------------------------------------------------------------------------- paths


def resource_path(
    group: str, version: str, plural: str, namespace: str | None = None, name: str | None = None,
    subresource: str | None = None,
) -> str:
    """/api/v1/... for the core group, /apis/<group>/<version>/... otherwise."""
    path = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    if namespace is not None:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{quote(name, safe=':')}"
    if subresource is not None:
        path += f"/{subresource}"
    return path


def object_path(manifest: Json) -> str:
    """REST path of an object; the plural is the lowercased kind + "s", true of every kind the dev
    cluster applies (ServiceAccount, ConfigMap, Service, Deployment, ClusterRole(Binding), ...)."""
    api_version, kind, meta = manifest["apiVersion"], manifest["kind"], manifest["metadata"]
    group, _, version = api_version.rpartition("/")
    return resource_path(group, version, kind.lower() + "s", meta.get("namespace") or None, meta["name"])


# --------------------------------------------------------------------------- credentials


@dataclass
class Credentials:
    """Where the API server is and how to prove who we are, kept fresh.

    Bearer tokens come from three places, and each can change under a long-running process:
    - a projected service-account token file (in a pod): re-read every minute;
    - a kubeconfig `exec` plugin (EKS, GKE) or auth provider: `kubernetes.config` re-runs it when the
      credential it returned has expired (its refresh hook, asked on every request);
    - anything else: after a 401 the client calls `reload()`, which reads the kubeconfig again.
    """

    server: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    token: str | None = None
    token_file: str | None = None
    reloader: Callable[[], Credentials] | None = None
    _refresh_hook: Callable[[], str | None] | None = None
    _token_read_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(
        cls, kubeconfig: str | Path | None = None, context: str | None = None, temp_dir: Path | None = None
    ) -> Credentials:
        """In-cluster credentials when running in a pod (and no kubeconfig is named), else the kubeconfig
        ($KUBECONFIG or ~/.kube/config). `temp_dir` keeps files of embedded certificates out of /tmp (a
        SIGKILLed process cannot clean them up)."""
        from kubernetes import client, config  # lazily: only the config loaders are used

        def again() -> Credentials:
            return cls.load(kubeconfig, context, temp_dir)

        configuration = client.Configuration()
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(IN_CLUSTER_TOKEN):
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return cls(
                server=configuration.host.rstrip("/"), ca_file=configuration.ssl_ca_cert,
                verify=bool(configuration.verify_ssl), token_file=IN_CLUSTER_TOKEN, reloader=again,
            )
        if temp_dir is not None:
            temp_dir.mkdir(parents=True, exist_ok=True)
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig is not None else None, context=context,
            client_configuration=configuration, temp_file_path=str(temp_dir) if temp_dir is not None else None,
        )

        def current_token() -> str | None:
            # Runs kubernetes.config's refresh hook (an expired exec/OIDC credential is fetched again).
            value = configuration.get_api_key_with_prefix("BearerToken")
            return str(value).removeprefix("Bearer ").strip() if value else None

        return cls(
            server=configuration.host.rstrip("/"), ca_file=configuration.ssl_ca_cert,
            cert_file=configuration.cert_file, key_file=configuration.key_file,
            verify=bool(configuration.verify_ssl), token=current_token(), reloader=again,
            _refresh_hook=current_token,
        )

    def bearer(self) -> str | None:
        """The token to send now."""
        with self._lock:
            if self.token_file and time.monotonic() - self._token_read_at > TOKEN_FILE_REREAD_SECONDS:
                self.token = Path(self.token_file).read_text().strip()
                self._token_read_at = time.monotonic()
            elif self._refresh_hook is not None:
                self.token = self._refresh_hook()
            return self.token

    def reload(self) -> Credentials:
        """Fresh credentials after a 401: the token file or kubeconfig read again, exec plugins re-run."""
        if self.reloader is None:
            return self
        return self.reloader()

    def headers(self) -> dict[str, str]:
        token = self.bearer()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def ssl_context(self) -> ssl.SSLContext | None:
        """None for plain HTTP."""
        if not self.server.startswith("https"):
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context
