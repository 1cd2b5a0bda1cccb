"""Per-pod loopback IPs and GPU indices, handed out like a CNI plugin and a device plugin would."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

POD_NETWORK = ipaddress.IPv4Network("127.10.0.0/16")
# .0 and .255 in each /24 are skipped: valid on lo, but they read like network/broadcast addresses.
_HOSTS_PER_BLOCK = 254


class AllocationError(Exception):
    pass


class IpAllocator:
    """Addresses of a pod network handed out round-robin, like the host-local IPAM plugin: the next free
    one after the last handed out, so a released address is reused only once the network wrapped. A
    freshly reused address would let Prometheus scrape a new pod under the labels of the old pod it
    still has as a target. An owner keeps its address until it releases it."""

    def __init__(self, network: ipaddress.IPv4Network = POD_NETWORK) -> None:
        self.network = network
        self._base = int(network.network_address)
        self._size = (network.num_addresses // 256) * _HOSTS_PER_BLOCK
        self._by_owner: dict[str, str] = {}
        self._used: set[int] = set()
        self._next = 0  # where the search for a free address starts

    def _address(self, index: int) -> str:
        block, host = divmod(index, _HOSTS_PER_BLOCK)
        return str(ipaddress.IPv4Address(self._base + block * 256 + host + 1))

    def _index(self, address: str) -> int:
        offset = int(ipaddress.IPv4Address(address)) - self._base
        block, host = divmod(offset, 256)
        return block * _HOSTS_PER_BLOCK + host - 1

    def allocate(self, owner: str) -> str:
        if owner in self._by_owner:
            return self._by_owner[owner]
        for step in range(self._size):
            index = (self._next + step) % self._size
            if index not in self._used:
                address = self.reserve(owner, self._address(index))
                self._next = (index + 1) % self._size
                return address
        raise AllocationError(f"pod network {self.network} exhausted")

    def reserve(self, owner: str, address: str) -> str:
        """Record an address chosen earlier (agent restart); the owner keeps it, and the search goes on after it."""
        index = self._index(address)
        self._used.add(index)
        self._next = max(self._next, index + 1) % self._size
        self._by_owner[owner] = address
        return address

    def release(self, owner: str) -> None:
        address = self._by_owner.pop(owner, None)
        if address is not None:
            self._used.discard(self._index(address))

    def owned(self) -> dict[str, str]:
        return dict(self._by_owner)


class GpuAllocator:
    """Hands out GPU indices 0..count-1, lowest first; each index has at most one owner."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._owner: dict[int, str] = {}

    def free(self) -> list[int]:
        return [i for i in range(self.count) if i not in self._owner]

    def allocate(self, owner: str, n: int) -> list[int]:
        free = self.free()
        if n > len(free):
            raise AllocationError(
                "Allocate failed due to requested number of devices unavailable for nvidia.com/gpu. "
                f"Requested: {n}, Available: {len(free)}"
            )
        chosen = free[:n]
        for index in chosen:
            self._owner[index] = owner
        return chosen

    def reserve(self, owner: str, indices: Iterable[int]) -> None:
        for index in indices:
            if 0 <= index < self.count:
                self._owner[index] = owner

    def release(self, owner: str) -> None:
        for index in [i for i, o in self._owner.items() if o == owner]:
            del self._owner[index]

    def owned(self) -> dict[int, str]:
        return dict(self._owner)
