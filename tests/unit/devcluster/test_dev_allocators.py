"""Pod IPs and GPU indices: unique while held, reused after release."""

from __future__ import annotations

import ipaddress
import random
import socket

import pytest

from kubetune_dev.allocators import AllocationError, GpuAllocator, IpAllocator
from kubetune_dev.preflight import bound_loopback_octets, free_pod_network


def test_ips_are_unique_stable_and_reused() -> None:
    ips = IpAllocator()
    a, b = ips.allocate("a"), ips.allocate("b")
    assert (a, b) == ("127.10.0.1", "127.10.0.2")
    assert ips.allocate("a") == a  # stable per owner
    ips.release("a")
    assert ips.allocate("c") == "127.10.0.3"  # round-robin: not the address a pod just left


def test_released_ips_are_reused_once_the_network_wrapped() -> None:
    ips = IpAllocator(ipaddress.IPv4Network("127.10.0.0/24"))  # 254 usable addresses
    first = ips.allocate("first")
    ips.release("first")
    for i in range(253):
        ips.allocate(str(i))
    assert ips.allocate("wrapped") == first
    with pytest.raises(AllocationError, match="127.10.0.0/24 exhausted"):
        ips.allocate("one too many")


def test_ips_skip_network_and_broadcast_looking_addresses() -> None:
    ips = IpAllocator()
    addresses = [ips.allocate(str(i)) for i in range(300)]
    assert len(set(addresses)) == 300
    assert not any(a.endswith((".0", ".255")) for a in addresses)
    assert "127.10.1.1" in addresses


def test_reserved_ips_survive_an_agent_restart() -> None:
    ips = IpAllocator()
    ips.reserve("old", "127.10.0.1")
    assert ips.allocate("new") == "127.10.0.2"


def test_gpus_lowest_first_never_shared() -> None:
    gpus = GpuAllocator(4)
    assert gpus.allocate("a", 1) == [0]
    assert gpus.allocate("b", 2) == [1, 2]
    with pytest.raises(AllocationError, match="Requested: 2, Available: 1"):
        gpus.allocate("c", 2)
    gpus.release("b")
    assert gpus.allocate("c", 3) == [1, 2, 3]
    assert gpus.allocate("d", 0) == []


def test_gpu_reservations_on_restart() -> None:
    gpus = GpuAllocator(2)
    gpus.reserve("a", [1])
    assert gpus.allocate("b", 1) == [0]


def test_each_cluster_takes_a_pod_network_where_nothing_listens() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.77.0.1", 0))
    taken.listen()
    try:
        busy = bound_loopback_octets()
        assert free_pod_network() != "127.77.0.0/16"
    finally:
        taken.close()
    assert 77 in busy
    rng = random.Random(7)
    networks = {free_pod_network(rng, busy) for _ in range(300)}
    assert "127.77.0.0/16" not in networks
    assert len(networks) > 100  # spread out, so clusters starting together rarely meet
    for network in networks:
        parsed = ipaddress.IPv4Network(network)
        assert parsed.prefixlen == 16 and parsed.is_loopback and parsed != ipaddress.IPv4Network("127.0.0.0/16")
