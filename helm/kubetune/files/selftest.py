"""`helm test` self-check of a kubetune release, run as `python -c` with the operator's ServiceAccount.

It talks to the API server only (no Service or pod network, so it also passes on the dev
cluster, whose node agent runs pods as local processes and has no kube-proxy) and checks:

1. the API serves tuningjobs and trials of kubetune.io/v1alpha1, with their status subresources;
2. the ServiceAccount holds every permission the operator needs (SelfSubjectAccessReview) in
   every watched namespace, or cluster-wide;
3. the operator pod is Ready, when the ServiceAccount may list pods in the release namespace
   (cluster-wide installs, or when the release namespace is watched); else it says it skipped.

Settings (environment): KUBETUNE_SELFTEST_RULES (JSON: the RBAC rules of the chart),
KUBETUNE_SELFTEST_NAMESPACES (comma-separated; empty means cluster-wide),
KUBETUNE_SELFTEST_RELEASE_NAMESPACE, KUBETUNE_SELFTEST_OPERATOR_SELECTOR (label selector),
KUBETUNE_SELFTEST_TIMEOUT (seconds). KUBETUNE_SELFTEST_API_URL and KUBETUNE_SELFTEST_TOKEN_DIR
replace the in-cluster API address and service-account directory (unit tests).
Only the standard library: it runs in the operator image or any Python 3.11.
"""

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

GROUP_VERSION = "kubetune.io/v1alpha1"
SERVED = ("tuningjobs", "tuningjobs/status", "trials", "trials/status")


class Api:
    def __init__(self) -> None:
        token_dir = os.environ.get("KUBETUNE_SELFTEST_TOKEN_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host:
            host = f"[{host}]"
        self.url = os.environ.get("KUBETUNE_SELFTEST_API_URL") or f"https://{host}:{port}"
        with open(os.path.join(token_dir, "token")) as handle:
            self.token = handle.read().strip()
        ca_file = os.path.join(token_dir, "ca.crt")
        self.context = ssl.create_default_context(cafile=ca_file if os.path.exists(ca_file) else None)
        self.timeout = float(os.environ.get("KUBETUNE_SELFTEST_TIMEOUT", "30"))

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        context = self.context if self.url.startswith("https") else None
        with urllib.request.urlopen(request, timeout=self.timeout, context=context) as response:
            return json.loads(response.read() or b"{}")


def check_served(api: Api) -> list[str]:
    try:
        resources = {r["name"] for r in api.call("GET", f"/apis/{GROUP_VERSION}").get("resources", [])}
    except urllib.error.HTTPError as exc:
        return [f"the API does not serve {GROUP_VERSION} (HTTP {exc.code}): are the CRDs installed (crds.enabled)?"]
    return [f"the API does not serve {GROUP_VERSION} {name}" for name in SERVED if name not in resources]


def permissions(rules: list[dict[str, Any]], namespaces: list[str]) -> list[dict[str, str]]:
    """One resourceAttributes per (namespace, group, resource, subresource, verb) the rules grant."""
    wanted = []
    for namespace in namespaces:
        for rule in rules:
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    name, _, subresource = resource.partition("/")
                    for verb in rule.get("verbs", []):
                        wanted.append(
                            {"namespace": namespace, "group": group, "resource": name,
                             "subresource": subresource, "verb": verb}
                        )
    return wanted


def describe(attributes: dict[str, str]) -> str:
    resource = attributes["resource"] + (f"/{attributes['subresource']}" if attributes["subresource"] else "")
    group = attributes["group"] or "core"
    where = f"namespace {attributes['namespace']}" if attributes["namespace"] else "all namespaces"
    return f"{attributes['verb']} {resource} ({group}) in {where}"


def allowed(api: Api, attributes: dict[str, str]) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    answer = api.call("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)
    return bool(answer.get("status", {}).get("allowed"))


def check_permissions(api: Api, rules: list[dict[str, Any]], namespaces: list[str]) -> list[str]:
    return [
        f"the operator's ServiceAccount may not {describe(a)}"
        for a in permissions(rules, namespaces)
        if not allowed(api, a)
    ]


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def check_operator_ready(api: Api, namespace: str, selector: str, deadline: float) -> tuple[list[str], str]:
    attributes = {"namespace": namespace, "group": "", "resource": "pods", "subresource": "", "verb": "list"}
    if not allowed(api, attributes):
        return [], f"skipped: may not list pods in {namespace} (it is not a watched namespace)"
    query = urllib.parse.urlencode({"labelSelector": selector})
    while True:
        pods = api.call("GET", f"/api/v1/namespaces/{namespace}/pods?{query}").get("items", [])
        if any(pod_ready(p) for p in pods):
            return [], f"operator pod Ready in {namespace}"
        if time.monotonic() > deadline:
            names = ", ".join(p["metadata"]["name"] for p in pods) or "none"
            return [f"no Ready operator pod in {namespace} matching {selector} (pods: {names})"], ""
        time.sleep(2)


def main() -> int:
    rules = json.loads(os.environ["KUBETUNE_SELFTEST_RULES"])
    namespaces = [n for n in os.environ.get("KUBETUNE_SELFTEST_NAMESPACES", "").split(",") if n] or [""]
    release_namespace = os.environ.get("KUBETUNE_SELFTEST_RELEASE_NAMESPACE", "default")
    selector = os.environ.get("KUBETUNE_SELFTEST_OPERATOR_SELECTOR", "app.kubernetes.io/component=operator")
    api = Api()
    deadline = time.monotonic() + api.timeout
    failures = check_served(api)
    print(f"{'FAIL' if failures else 'ok'}: CRDs served ({', '.join(SERVED)})")
    denied = check_permissions(api, rules, namespaces)
    scope = ", ".join(namespaces) if namespaces != [""] else "all namespaces"
    checked = len(permissions(rules, namespaces))
    print(f"{'FAIL' if denied else 'ok'}: operator permissions in {scope} ({checked} checked)")
    failures += denied
    not_ready, note = check_operator_ready(api, release_namespace, selector, deadline)
    print(f"FAIL: {not_ready[0]}" if not_ready else f"ok: {note}")
    failures += not_ready
    for failure in failures:
        print(f"  - {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
