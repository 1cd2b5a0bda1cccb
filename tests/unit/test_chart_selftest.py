"""The `helm test` self-check (helm/kubetune/files/selftest.py) against a fake API server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from helm_chart import OPERATOR_RULES

SCRIPT = Path(__file__).resolve().parents[2] / "helm" / "kubetune" / "files" / "selftest.py"
TOKEN = "test-token"


@dataclass
class FakeApi:
    """What the fake API server answers; `reviews` records each SelfSubjectAccessReview asked."""

    served: list[str] = field(default_factory=lambda: ["tuningjobs", "tuningjobs/status", "trials", "trials/status"])
    denied: set[tuple[str, str, str]] = field(default_factory=set)  # (namespace, resource[/sub], verb)
    operator_ready: bool = True
    reviews: list[dict[str, str]] = field(default_factory=list)
    selectors: list[str] = field(default_factory=list)


def handler_for(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorized(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self.reply(401, {"kind": "Status", "code": 401})
                return False
            return True

        def do_GET(self) -> None:
            if not self.authorized():
                return
            url = urlparse(self.path)
            if url.path == "/apis/kubetune.io/v1alpha1":
                if not api.served:
                    self.reply(404, {"kind": "Status", "code": 404})
                else:
                    self.reply(200, {"resources": [{"name": n} for n in api.served]})
            elif url.path == "/api/v1/namespaces/kubetune/pods":
                api.selectors += parse_qs(url.query).get("labelSelector", [])
                status = "True" if api.operator_ready else "False"
                self.reply(200, {"items": [{"metadata": {"name": "kt-kubetune-abc"},
                                            "status": {"conditions": [{"type": "Ready", "status": status}]}}]})
            else:
                self.reply(404, {"kind": "Status", "code": 404})

        def do_POST(self) -> None:
            if not self.authorized():
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            attributes = body["spec"]["resourceAttributes"]
            api.reviews.append(attributes)
            resource = attributes["resource"] + (f"/{attributes['subresource']}" if attributes["subresource"] else "")
            allowed = (attributes["namespace"], resource, attributes["verb"]) not in api.denied
            self.reply(201, {**body, "status": {"allowed": allowed}})

    return Handler


@pytest.fixture
def fake_api() -> Iterator[tuple[FakeApi, str]]:
    api = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(api))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield api, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_selftest(url: str, tmp_path: Path, namespaces: str = "") -> subprocess.CompletedProcess[str]:
    (tmp_path / "token").write_text(TOKEN + "\n")
    env = {
        "KUBETUNE_SELFTEST_API_URL": url,
        "KUBETUNE_SELFTEST_TOKEN_DIR": str(tmp_path),
        "KUBETUNE_SELFTEST_RULES": json.dumps(OPERATOR_RULES),
        "KUBETUNE_SELFTEST_NAMESPACES": namespaces,
        "KUBETUNE_SELFTEST_RELEASE_NAMESPACE": "kubetune",
        "KUBETUNE_SELFTEST_OPERATOR_SELECTOR": "app.kubernetes.io/component=operator,app.kubernetes.io/instance=kt",
        "KUBETUNE_SELFTEST_TIMEOUT": "3",
    }
    # exactly how the test pod runs it: `python -c <file content>`
    return subprocess.run([sys.executable, "-c", SCRIPT.read_text()], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_passes_on_a_healthy_release(fake_api: tuple[FakeApi, str], tmp_path: Path) -> None:
    api, url = fake_api
    result = run_selftest(url, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: CRDs served" in result.stdout
    assert "ok: operator permissions in all namespaces (16 checked)" in result.stdout
    assert "ok: operator pod Ready in kubetune" in result.stdout
    asked = {(r["group"], r["resource"], r["subresource"], r["verb"]) for r in api.reviews if r["namespace"] == ""}
    assert ("kubetune.io", "tuningjobs", "status", "patch") in asked
    assert ("", "pods", "", "delete") in asked
    assert api.selectors == ["app.kubernetes.io/component=operator,app.kubernetes.io/instance=kt"]


def test_names_each_missing_permission(fake_api: tuple[FakeApi, str], tmp_path: Path) -> None:
    api, url = fake_api
    api.denied = {("team-b", "trials/status", "patch"), ("team-a", "pods", "delete")}
    result = run_selftest(url, tmp_path, namespaces="team-a,team-b")
    assert result.returncode == 1
    assert "FAIL: operator permissions in team-a, team-b (32 checked)" in result.stdout
    assert "may not patch trials/status (kubetune.io) in namespace team-b" in result.stderr
    assert "may not delete pods (core) in namespace team-a" in result.stderr
    assert "skipped: may not list pods in kubetune" not in result.stdout  # kubetune itself is not denied here


def test_fails_when_the_crds_are_missing(fake_api: tuple[FakeApi, str], tmp_path: Path) -> None:
    api, url = fake_api
    api.served = []
    result = run_selftest(url, tmp_path)
    assert result.returncode == 1
    assert "are the CRDs installed (crds.enabled)?" in result.stderr
    api.served = ["tuningjobs", "trials"]
    result = run_selftest(url, tmp_path)
    assert "does not serve kubetune.io/v1alpha1 trials/status" in result.stderr


def test_waits_for_then_reports_an_unready_operator(fake_api: tuple[FakeApi, str], tmp_path: Path) -> None:
    api, url = fake_api
    api.operator_ready = False
    result = run_selftest(url, tmp_path)
    assert result.returncode == 1
    assert "no Ready operator pod in kubetune" in result.stderr and "kt-kubetune-abc" in result.stderr


def test_skips_the_pod_check_where_it_may_not_list_pods(fake_api: tuple[FakeApi, str], tmp_path: Path) -> None:
    api, url = fake_api
    api.denied = {("kubetune", "pods", "list")}
    api.operator_ready = False
    result = run_selftest(url, tmp_path, namespaces="team-a")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: skipped: may not list pods in kubetune" in result.stdout
