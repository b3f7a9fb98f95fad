"""Two network namespaces joined by a veth pair shaped with tc to a board's NIC (100 Mbit/s),
for tests and benchmarks that move pages over a real TCP link. Needs root."""

from __future__ import annotations

import os
import subprocess

RATE = "100mbit"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class ShapedLink:
    """Namespaces `<tag>-src` (address .1) and `<tag>-dst` (address .2)."""

    def __init__(self, tag: str, subnet: int):
        self.src_ns, self.dst_ns = f"{tag}-src", f"{tag}-dst"
        self.src_ip, self.dst_ip = f"10.231.{subnet}.1", f"10.231.{subnet}.2"
        self._veth = (f"{tag}a"[:15], f"{tag}b"[:15])

    def __enter__(self) -> "ShapedLink":
        self.close()
        a, b = self._veth
        _ip("netns", "add", self.src_ns)
        _ip("netns", "add", self.dst_ns)
        _ip("link", "add", a, "netns", self.src_ns, "type", "veth", "peer", "name", b,
            "netns", self.dst_ns)
        for ns, dev, addr in ((self.src_ns, a, self.src_ip), (self.dst_ns, b, self.dst_ip)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root",
                            "tbf", "rate", RATE, "burst", "32kbit", "latency", "400ms"],
                           check=True, capture_output=True)
        return self

    def in_src(self, cmd: list) -> list[str]:
        return ["ip", "netns", "exec", self.src_ns, *map(str, cmd)]

    def in_dst(self, cmd: list) -> list[str]:
        return ["ip", "netns", "exec", self.dst_ns, *map(str, cmd)]

    def close(self) -> None:
        for ns in (self.src_ns, self.dst_ns):
            if os.path.exists(f"/run/netns/{ns}"):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def __exit__(self, *exc) -> None:
        self.close()
