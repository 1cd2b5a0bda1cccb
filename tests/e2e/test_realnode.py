"""The dev cluster's real node: kubelet, containerd, runc, CNI bridge, kube-proxy, CoreDNS and the
fake-GPU device plugin (`kubetune dev up --node real`, devcluster/kubetune_dev/realnode.py).

Pods here run the images imported at `dev up` (kubetune_dev/nodeimages.py): a busybox image as root and
as the non-root user 65532. No test asserts how long anything takes.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from kubetune_harness import (
    kubectl,
    phase,
    prometheus_query,
    restricted_container_context,
    restricted_pod_context,
    wait_for,
    wait_phase,
)

from kubetune_dev.cluster import ClusterInfo, DevCluster
from kubetune_dev.layout import MARKER_ENV
from kubetune_dev.procs import processes_with_env
from kubetune_dev.realcluster import RealNode, node_images
from kubetune_dev.testing import Kube

pytestmark = pytest.mark.realnode


def image(info: ClusterInfo, name: str = "busybox-nonroot") -> str:
    return node_images(info.bin_dir)[name].name


def pod_cidr(info: ClusterInfo) -> ipaddress.IPv4Network:
    cfg = DevCluster(info.home).config
    assert cfg is not None
    return cfg.node_network.pod_cidr


def busybox_pod(
    info: ClusterInfo,
    name: str,
    script: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    ports: list[client.V1ContainerPort] | None = None,
    limits: dict[str, str] | None = None,
    restart_policy: str = "Never",
) -> client.V1Pod:
    """A pod the `restricted` Pod Security profile admits, running `sh -c script` as user 65532."""
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels, annotations=annotations),
        spec=client.V1PodSpec(
            restart_policy=restart_policy,
            security_context=restricted_pod_context(),
            containers=[
                client.V1Container(
                    name="main",
                    image=image(info),
                    command=["sh", "-c", script],
                    ports=ports,
                    resources=client.V1ResourceRequirements(limits=limits) if limits else None,
                    security_context=restricted_container_context(),
                )
            ],
        ),
    )


def logs(kube: Kube, namespace: str, name: str) -> str:
    return str(kube.core.read_namespaced_pod_log(name, namespace))


def wait_log(kube: Kube, namespace: str, name: str, needle: str) -> str:
    def found() -> str | None:
        try:
            text = logs(kube, namespace, name)
        except ApiException as exc:
            if exc.status == 400:  # the container has not started yet
                return None
            raise
        return text if needle in text else None

    return wait_for(f"{needle!r} in the log of {name}", found, timeout=120)


def test_real_node_is_ready_with_containerd_2_and_four_gpus(real_cluster: ClusterInfo) -> None:
    wide = kubectl(real_cluster, "get", "nodes", "-o", "wide")
    row = next(line for line in wide.splitlines() if line.startswith(real_cluster.node_name))
    assert " Ready " in row and "containerd://2." in row, wide
    node = json.loads(kubectl(real_cluster, "get", "node", real_cluster.node_name, "-o", "json"))
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "4"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.4"
    assert node["metadata"]["labels"]["kubetune.io/node-kind"] == "real"


def test_pods_get_bridge_ips_services_resolve_by_name_and_logs_work(
    real_cluster: ClusterInfo, real_kube: Kube, real_namespace: str
) -> None:
    ns = real_namespace
    web = busybox_pod(
        real_cluster,
        "web",
        "mkdir -p /tmp/www && echo hello-from-$HOSTNAME > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
        labels={"app": "web"},
        ports=[client.V1ContainerPort(container_port=8080, name="http")],
    )
    real_kube.core.create_namespaced_pod(ns, web)
    real_kube.core.create_namespaced_service(
        ns,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[client.V1ServicePort(port=80, target_port=8080)]),
        ),
    )
    running = wait_phase(real_kube, ns, "web", "Running")
    assert ipaddress.ip_address(running.status.pod_ip) in pod_cidr(real_cluster)
    # By Service name (CoreDNS, search path from the kubelet), through kube-proxy's Service address.
    probe = busybox_pod(
        real_cluster,
        "probe",
        f"nslookup web.{ns}.svc.cluster.local; "
        # (busybox 1.35's `wget -T` crashes; kube-proxy's rules may lag the pod by a moment.)
        "until wget -qO- http://web/; do sleep 1; done; "
        "echo resolv; cat /etc/resolv.conf",
    )
    real_kube.core.create_namespaced_pod(ns, probe)
    finished = wait_phase(real_kube, ns, "probe", "Succeeded", "Failed")
    text = logs(real_kube, ns, "probe")  # `kubectl logs`: API server -> kubelet -> containerd's log file
    assert finished.status.phase == "Succeeded", text
    service_ip = real_kube.core.read_namespaced_service("web", ns).spec.cluster_ip
    assert re.search(rf"Name:\s+web\.{ns}\.svc\.cluster\.local\s+Address:\s+{re.escape(service_ip)}", text), text
    assert "hello-from-web" in text
    assert "nameserver 10.0.0.10" in text and f"search {ns}.svc.cluster.local" in text
    assert ipaddress.ip_address(finished.status.pod_ip) in pod_cidr(real_cluster)


def test_pods_reach_the_api_server_through_the_kubernetes_service(
    real_cluster: ClusterInfo, real_kube: Kube, real_namespace: str
) -> None:
    ns = real_namespace
    # Plain HTTP to the Service's HTTPS port: only the real API server answers this way.
    probe = busybox_pod(
        real_cluster,
        "api",
        'echo "service $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"; '
        'printf "GET /version HTTP/1.0\\r\\n\\r\\n" | nc -w 5 kubernetes.default.svc 443',
    )
    real_kube.core.create_namespaced_pod(ns, probe)
    wait_phase(real_kube, ns, "api", "Succeeded", "Failed")
    text = logs(real_kube, ns, "api")
    assert "service 10.0.0.1:443" in text
    assert "Client sent an HTTP request to an HTTPS server" in text, text
    # An in-cluster client-go program (CoreDNS) lists and watches through the same Service: Ready
    # means its kubernetes plugin synced with the API server over TLS with its ServiceAccount token.
    coredns = real_kube.apps.read_namespaced_deployment("coredns", "kube-system")
    assert coredns.status.ready_replicas == 1
    endpoints = real_kube.core.read_namespaced_endpoints("kubernetes", "default")
    cfg = DevCluster(real_cluster.home).config
    assert cfg is not None
    assert [a.ip for a in endpoints.subsets[0].addresses] == [cfg.node_network.node_ip]


def test_kubectl_exec_runs_in_the_container(real_cluster: ClusterInfo, real_kube: Kube, real_namespace: str) -> None:
    ns = real_namespace
    real_kube.core.create_namespaced_pod(ns, busybox_pod(real_cluster, "shell", "exec sleep 3600"))
    wait_phase(real_kube, ns, "shell", "Running")
    out = kubectl(real_cluster, "exec", "-n", ns, "shell", "--", "sh", "-c", "id -u; cat /proc/1/cmdline")
    assert out.splitlines()[0] == "65532"
    assert "sleep" in out


def test_six_pods_share_four_gpus_without_sharing_a_device(
    real_cluster: ClusterInfo, real_kube: Kube, real_namespace: str
) -> None:
    """The kubelet's device manager assigns the device plugin's devices: 4 run, 2 wait, none shared."""
    ns = real_namespace
    names = [f"gpu-{i}" for i in range(6)]
    for name in names:
        pod = busybox_pod(
            real_cluster,
            name,
            'echo "CUDA=$CUDA_VISIBLE_DEVICES NVIDIA=$NVIDIA_VISIBLE_DEVICES"; exec sleep 3600',
            limits={"nvidia.com/gpu": "1"},
        )
        real_kube.core.create_namespaced_pod(ns, pod)

    def settled() -> dict[str, list[str]] | None:
        pods = real_kube.core.list_namespaced_pod(ns).items
        running = [p.metadata.name for p in pods if p.status.phase == "Running"]
        unschedulable = [
            p.metadata.name
            for p in pods
            if p.status.phase == "Pending"
            and any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in p.status.conditions or [])
        ]
        return {"running": running, "waiting": unschedulable} if len(running) == 4 and len(unschedulable) == 2 else None

    state = wait_for("4 GPU pods running and 2 unschedulable", settled, timeout=180)
    devices = {}
    for name in state["running"]:
        line = wait_log(real_kube, ns, name, "CUDA=")
        match = re.search(r"CUDA=(\S*) NVIDIA=(\S*)", line)
        assert match and match.group(1) == match.group(2), line
        devices[name] = match.group(1)
    assert sorted(devices.values()) == ["0", "1", "2", "3"], devices
    waiting = real_kube.core.read_namespaced_pod(state["waiting"][0], ns)
    message = next(c.message for c in waiting.status.conditions if c.type == "PodScheduled")
    assert "nvidia.com/gpu" in message, message

    # Freeing one device lets one waiting pod start on exactly that device.
    freed_pod = state["running"][0]
    real_kube.core.delete_namespaced_pod(freed_pod, ns, grace_period_seconds=0)
    started = wait_for(
        "a waiting GPU pod running",
        lambda: next((n for n in state["waiting"] if phase(real_kube, ns, n) == "Running"), None),
        timeout=180,
    )
    line = wait_log(real_kube, ns, started, "CUDA=")
    assert f"CUDA={devices[freed_pod]} " in line, (line, devices)


def test_prometheus_scrapes_a_trial_pod_on_its_pod_ip(
    real_cluster: ClusterInfo, real_kube: Kube, real_namespace: str
) -> None:
    """The scrape contract (kubetune.io/scrape, a port named `metrics`, kubetune.io/metrics-path)
    for a pod on the real node: Prometheus on the host reaches it on its bridge address."""
    ns = real_namespace
    script = (
        "mkdir -p /tmp/www && printf '# TYPE kubetune_e2e_real_node gauge\\nkubetune_e2e_real_node 42\\n' "
        "> /tmp/www/metrics.txt && exec httpd -f -p 9100 -h /tmp/www"
    )
    pod = busybox_pod(
        real_cluster,
        "trial-0",
        script,
        labels={"kubetune.io/scrape": "true", "kubetune.io/job": "job-real", "kubetune.io/trial": "trial-0"},
        annotations={"kubetune.io/metrics-path": "/metrics.txt"},
        ports=[client.V1ContainerPort(container_port=9100, name="metrics")],
    )
    real_kube.core.create_namespaced_pod(ns, pod)
    pod_ip = wait_phase(real_kube, ns, "trial-0", "Running").status.pod_ip
    series = wait_for(
        "kubetune_e2e_real_node scraped",
        lambda: prometheus_query(real_cluster.prometheus_url, f'kubetune_e2e_real_node{{namespace="{ns}"}}'),
        timeout=120,
    )
    labels = series[0]["metric"]
    assert series[0]["value"][1] == "42"
    assert labels["kubetune_io_job"] == "job-real" and labels["kubetune_io_trial"] == "trial-0"
    assert labels["pod"] == "trial-0" and labels["container"] == "main"
    assert labels["instance"] == f"{pod_ip}:9100"
    assert ipaddress.ip_address(pod_ip) in pod_cidr(real_cluster)


@pytest.fixture
def second_real_cluster(tmp_path: Path) -> Iterator[DevCluster]:
    cluster = DevCluster(tmp_path / "second", node_kind="real", owner_pid=os.getpid())
    try:
        yield cluster
    finally:
        cluster.down()


def iptables_rules() -> set[str]:
    out = subprocess.run(["iptables-save"], check=True, capture_output=True, text=True).stdout
    return {line for line in out.splitlines() if not line.startswith("#") and not line.startswith(":")}


def test_down_removes_every_container_mount_interface_and_chain(
    real_cluster: ClusterInfo, second_real_cluster: DevCluster
) -> None:
    """A second real-node cluster beside the session's: both run kube-proxy and CNI, in their own
    network namespaces; after `down` nothing of the second is left on the host."""
    host_rules_before = iptables_rules()
    info = second_real_cluster.up()
    cfg = second_real_cluster.config
    assert cfg is not None
    kube = Kube.from_kubeconfig(info.kubeconfig)
    try:
        kube.core.create_namespaced_pod("default", busybox_pod(info, "leftover", "exec sleep 3600"))
        kube.core.create_namespaced_service(
            "default",
            client.V1Service(
                metadata=client.V1ObjectMeta(name="leftover"),
                spec=client.V1ServiceSpec(selector={"x": "y"}, ports=[client.V1ServicePort(port=80)]),
            ),
        )
        wait_phase(kube, "default", "leftover", "Running")
        node = RealNode(cfg, print)
        node_rules = subprocess.run(
            ["ip", "netns", "exec", cfg.node_network.netns, "iptables-save"], check=True, capture_output=True, text=True
        ).stdout
        assert "KUBE-SERVICES" in node_rules and str(cfg.node_network.pod_cidr) in node_rules
        assert node.leftovers(), "a running node shows up in leftovers()"
    finally:
        kube.close()
    second_real_cluster.down()

    assert RealNode(cfg, print).leftovers() == []
    assert not list(processes_with_env(MARKER_ENV, cfg.cluster_id))
    assert not info.home.exists()
    # The host's own tables never held the node's chains (other tools on a shared host may change
    # them meanwhile, so only what would be ours is looked for); the session cluster's node is untouched.
    added = iptables_rules() - host_rules_before
    ours = [r for r in added if "KUBE-" in r or str(cfg.node_network.pod_cidr) in r or cfg.node_network.host_veth in r]
    assert not ours, ours
    assert " Ready " in kubectl(real_cluster, "get", "nodes")


# --------------------------------------------------------------------------- what only a real node enforces


def terminated(kube: Kube, namespace: str, name: str) -> client.V1ContainerStateTerminated:
    pod = wait_phase(kube, namespace, name, "Succeeded", "Failed")
    state = pod.status.container_statuses[0].state
    assert state.terminated is not None, pod.status
    return state.terminated


def test_a_container_over_its_memory_limit_is_oom_killed_by_the_kernel(
    real_cluster: ClusterInfo, real_kube: Kube, real_namespace: str
) -> None:
    pod = busybox_pod(
        real_cluster,
        "hog",
        # The container's main process (as a trainer would be) holds a 256 MiB block: four times the limit.
        "exec dd if=/dev/zero of=/dev/null bs=256M count=4",
        limits={"memory": "64Mi"},
    )
    real_kube.core.create_namespaced_pod(real_namespace, pod)
    state = terminated(real_kube, real_namespace, "hog")
    assert (state.exit_code, state.reason) == (137, "OOMKilled"), state


def test_read_only_root_filesystem_is_enforced_and_volumes_stay_writable(
    real_cluster: ClusterInfo, real_kube: Kube, real_namespace: str
) -> None:
    pod = busybox_pod(
        real_cluster,
        "ro",
        "touch /marker 2>&1; echo rootfs=$?; touch /scratch/marker && echo volume=$?",
    )
    container = pod.spec.containers[0]
    container.security_context.read_only_root_filesystem = True
    container.volume_mounts = [client.V1VolumeMount(name="scratch", mount_path="/scratch")]
    pod.spec.volumes = [client.V1Volume(name="scratch", empty_dir=client.V1EmptyDirVolumeSource())]
    real_kube.core.create_namespaced_pod(real_namespace, pod)
    assert terminated(real_kube, real_namespace, "ro").exit_code == 0
    text = logs(real_kube, real_namespace, "ro")
    assert "Read-only file system" in text and "rootfs=1" in text, text
    assert "volume=0" in text, text


def test_run_as_non_root_refuses_an_image_that_runs_as_root(
    real_cluster: ClusterInfo, real_kube: Kube, real_namespace: str
) -> None:
    """The `restricted` profile admits the pod (runAsNonRoot: true); the kubelet refuses to start
    the root image, as with pytorch/pytorch or NGC images, until runAsUser names a user."""
    refused = busybox_pod(real_cluster, "as-root", "id -u")
    refused.spec.containers[0].image = image(real_cluster, "busybox")
    real_kube.core.create_namespaced_pod(real_namespace, refused)

    def waiting() -> client.V1ContainerStateWaiting | None:
        statuses = real_kube.core.read_namespaced_pod("as-root", real_namespace).status.container_statuses or []
        state = statuses[0].state.waiting if statuses else None
        return state if state is not None and state.reason == "CreateContainerConfigError" else None

    state = wait_for("CreateContainerConfigError", waiting, timeout=120)
    assert "runAsNonRoot and image will run as root" in state.message, state.message
    assert phase(real_kube, real_namespace, "as-root") == "Pending"

    allowed = busybox_pod(real_cluster, "as-user", "id -u")
    allowed.spec.containers[0].image = image(real_cluster, "busybox")
    allowed.spec.security_context.run_as_user = 1000
    real_kube.core.create_namespaced_pod(real_namespace, allowed)
    assert terminated(real_kube, real_namespace, "as-user").exit_code == 0
    assert logs(real_kube, real_namespace, "as-user").strip().splitlines()[0] == "1000"


def test_termination_message_comes_from_the_containers_file(
    real_cluster: ClusterInfo, real_kube: Kube, real_namespace: str
) -> None:
    pod = busybox_pod(real_cluster, "msg", 'printf \'{"objective": 0.25}\' > /dev/termination-log; exit 3')
    real_kube.core.create_namespaced_pod(real_namespace, pod)
    state = terminated(real_kube, real_namespace, "msg")
    assert (state.exit_code, state.reason, state.message) == (3, "Error", '{"objective": 0.25}')


def final_status_while_deleted(kube: Kube, namespace: str, name: str, grace: int) -> client.V1ContainerStateTerminated:
    """Delete with a grace period and return the terminated state the kubelet reported last."""
    last: client.V1ContainerStateTerminated | None = None
    watcher = watch.Watch()
    kube.core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace)
    for event in watcher.stream(
        kube.core.list_namespaced_pod, namespace, field_selector=f"metadata.name={name}", timeout_seconds=120
    ):
        statuses = event["object"].status.container_statuses or []
        if statuses and statuses[0].state.terminated is not None:
            last = statuses[0].state.terminated
        if event["type"] == "DELETED":
            watcher.stop()
    assert last is not None, "the kubelet reported no terminated state before the pod was removed"
    return last


def test_graceful_deletion_delivers_sigterm_and_kills_after_the_grace_period(
    real_cluster: ClusterInfo, real_kube: Kube, real_namespace: str
) -> None:
    ns = real_namespace
    polite = busybox_pod(
        real_cluster,
        "polite",
        "trap 'echo -n stopped-cleanly > /dev/termination-log; exit 0' TERM; echo up; while true; do sleep 1; done",
    )
    stubborn = busybox_pod(real_cluster, "stubborn", "trap '' TERM; echo up; while true; do sleep 1; done")
    for pod in (polite, stubborn):
        real_kube.core.create_namespaced_pod(ns, pod)
    for name in ("polite", "stubborn"):
        wait_log(real_kube, ns, name, "up")
    handled = final_status_while_deleted(real_kube, ns, "polite", grace=30)
    assert (handled.exit_code, handled.message) == (0, "stopped-cleanly"), handled
    killed = final_status_while_deleted(real_kube, ns, "stubborn", grace=2)
    assert killed.exit_code == 137, killed


def test_pods_that_cannot_start_say_why(real_cluster: ClusterInfo, real_kube: Kube, real_namespace: str) -> None:
    """The kubelet's waiting reasons and the scheduler's condition that the operator reports."""
    ns = real_namespace
    bad_tag = busybox_pod(real_cluster, "bad-tag", "true")
    bad_tag.spec.containers[0].image = "kubetune.local/busybox:no-such-tag"
    no_secret = busybox_pod(real_cluster, "no-secret", "true")
    no_secret.spec.containers[0].env = [
        client.V1EnvVar(
            name="TOKEN",
            value_from=client.V1EnvVarSource(secret_key_ref=client.V1SecretKeySelector(name="missing", key="token")),
        )
    ]
    too_big = busybox_pod(real_cluster, "too-big", "true", limits={"nvidia.com/gpu": "5"})
    for pod in (bad_tag, no_secret, too_big):
        real_kube.core.create_namespaced_pod(ns, pod)

    def waiting(name: str, reasons: set[str]) -> client.V1ContainerStateWaiting | None:
        statuses = real_kube.core.read_namespaced_pod(name, ns).status.container_statuses or []
        state = statuses[0].state.waiting if statuses else None
        return state if state is not None and state.reason in reasons else None

    pull = wait_for("a pull error", lambda: waiting("bad-tag", {"ErrImagePull", "ImagePullBackOff"}), timeout=120)
    assert "kubetune.local/busybox:no-such-tag" in pull.message, pull.message
    config = wait_for("CreateContainerConfigError", lambda: waiting("no-secret", {"CreateContainerConfigError"}))
    assert config.message == 'secret "missing" not found', config.message

    def unschedulable() -> client.V1PodCondition | None:
        conditions = real_kube.core.read_namespaced_pod("too-big", ns).status.conditions or []
        return next((c for c in conditions if c.type == "PodScheduled" and c.reason == "Unschedulable"), None)

    condition = wait_for("too-big unschedulable", unschedulable, timeout=120)
    assert "Insufficient nvidia.com/gpu" in condition.message, condition.message


def test_a_restarted_kubelet_keeps_running_containers_and_the_device_plugin_registers_again(
    real_cluster_ctl: DevCluster, real_cluster: ClusterInfo, real_kube: Kube, real_namespace: str
) -> None:
    ns = real_namespace
    real_kube.core.create_namespaced_pod(
        ns, busybox_pod(real_cluster, "survivor", "echo up; exec sleep 3600", limits={"nvidia.com/gpu": "1"})
    )
    before = wait_phase(real_kube, ns, "survivor", "Running").status.container_statuses[0].container_id
    plugin_log = real_cluster.layout.log_file("device-plugin")
    registrations = plugin_log.read_text().count("registered")

    # A starting kubelet wipes the device-plugin sockets; the plugin notices and registers again.
    real_cluster_ctl.restart_component("kubelet")
    wait_for(
        "the device plugin registered with the new kubelet",
        lambda: plugin_log.read_text().count("registered") > registrations,
        timeout=120,
    )

    def gpus_back() -> bool:
        node = real_kube.core.read_node(real_cluster.node_name)
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        return ready.status == "True" and node.status.allocatable.get("nvidia.com/gpu") == "4"

    wait_for("the node Ready with its 4 GPUs", gpus_back, timeout=120)
    pod = real_kube.core.read_namespaced_pod("survivor", ns)
    assert pod.status.phase == "Running"
    assert pod.status.container_statuses[0].container_id == before  # the same container, never restarted
    assert pod.status.container_statuses[0].restart_count == 0


def kubetune_image_pod(info: ClusterInfo, name: str, image_name: str, args: list[str]) -> client.V1Pod:
    """A pod of one of kubetune's own images, by digest from the cluster's registry, with the
    `restricted` profile and a read-only root filesystem (a writable /tmp, as the chart gives)."""
    from kubetune_dev import images

    reference = images.reference(image_name, info.registry)
    assert reference is not None, f"no {image_name} image: run `make images`"
    security = restricted_container_context()
    security.read_only_root_filesystem = True
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            restart_policy="Never",
            security_context=restricted_pod_context(),
            containers=[client.V1Container(
                name="main", image=reference, args=args, security_context=security,
                volume_mounts=[client.V1VolumeMount(name="tmp", mount_path="/tmp")],
            )],
            volumes=[client.V1Volume(name="tmp", empty_dir=client.V1EmptyDirVolumeSource())],
        ),
    )


@pytest.mark.images
def test_kubetune_images_are_pulled_by_digest_from_the_local_registry_and_run(
    real_cluster: ClusterInfo, real_kube: Kube, real_namespace: str
) -> None:
    """containerd pulls through the node proxy from the registry `make images` pushed to; the images'
    own users satisfy runAsNonRoot."""
    ns = real_namespace
    real_kube.core.create_namespaced_pod(ns, kubetune_image_pod(real_cluster, "operator", "operator", ["--help"]))
    real_kube.core.create_namespaced_pod(ns, kubetune_image_pod(
        real_cluster, "trainer", "trainer", ["--epochs", "1", "--metrics-port", "0"]))
    for name in ("operator", "trainer"):
        pod = wait_phase(real_kube, ns, name, "Succeeded", "Failed", timeout=900)
        assert pod.status.phase == "Succeeded", (name, logs(real_kube, ns, name)[-2000:])
        assert pod.status.container_statuses[0].image_id.endswith(pod.spec.containers[0].image.split("@")[1])
    assert "operator" in logs(real_kube, ns, "operator")
    assert "val_accuracy" in logs(real_kube, ns, "trainer")
