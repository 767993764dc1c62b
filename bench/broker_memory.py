"""The embedded broker's size limit: the figures behind it, and what one huge publish costs.

1. Sizes: a signed 10,000-rule bundle (bench/decide.py's seeded fleet policy, signed by
   three policy keys) and the largest lineage batch a device may ship, beside the broker's
   limit (``hub.service.broker_limits.MAX_MESSAGE_BYTES``).
2. Memory: the embedded broker runs in a child process of its own; one client publishes
   ``--megabytes`` (default 100) on one topic, sent from a single reused 1 MiB buffer so the
   client itself stays small. The child's resident set (VmRSS) and peak (VmHWM) are read
   from ``/proc`` before the attempt and after the broker has hung up (or taken it all).

Usage: python bench/broker_memory.py [--quick] [--megabytes 100]  (``--quick``: 10 MB)
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from decide import build_scenario

from edge_agent.policy.source import load_policy_source
from edge_agent.protocol.bundle import BundleTarget, bundle_payload, sign_bundle
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.shipping import MAX_BATCH_BYTES
from hub.service.broker import EmbeddedBroker
from hub.service.broker_limits import MAX_MESSAGE_BYTES

CHUNK = b"\x00" * (1024 * 1024)
SETTLE_S = 2.0
"""Time the broker gets after the publish before memory is read again."""


def bundle_bytes(n_rules: int) -> int:
    """Size of a signed bundle carrying bench/decide.py's seeded policy of ``n_rules``."""
    source = build_scenario(n_rules, 1, seed=1).source
    text = yaml.dump(source, Dumper=yaml.CSafeDumper, sort_keys=False)
    policy = load_policy_source(text, "bench.yaml").policy
    now = int(time.time())
    target = BundleTarget(region="eu-1", groups=("line-a",))
    payload = bundle_payload(
        version=1, issued_at=now, expires_at=now + 86400, target=target, policy=policy
    )
    signers = [PrivateKey.generate() for _ in range(3)]
    return len(sign_bundle(payload, region="eu-1", signers=signers))


def _memory_kib() -> tuple[int, int]:
    """This process's (VmRSS, VmHWM) in KiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


async def serve() -> None:
    """Child mode: run the broker, print its port, answer each stdin line with memory."""
    async with EmbeddedBroker("127.0.0.1", 0) as broker:
        print(broker.port, flush=True)
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, sys.stdin.readline):
            rss, hwm = _memory_kib()
            print(rss, hwm, flush=True)


def _length(value: int) -> bytes:
    encoded = bytearray()
    while True:
        value, byte = divmod(value, 128)
        encoded.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(encoded)


def publish_huge(port: int, megabytes: int) -> str:
    """Connect, then publish ``megabytes`` MiB on one topic; how far the sending got."""
    topic = b"edgegov/v1/eu-1/device/gw-001/lineage"
    body_bytes = 2 + len(topic) + megabytes * len(CHUNK)
    connect_body = b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x06bench1"
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"\x10" + _length(len(connect_body)) + connect_body)
        client.recv(4)
        header = b"\x30" + _length(body_bytes) + len(topic).to_bytes(2, "big") + topic
        try:
            client.sendall(header)
            for _ in range(megabytes):
                client.sendall(CHUNK)
                sent += len(CHUNK)
        except (BrokenPipeError, ConnectionResetError):
            return f"broker hung up after {sent // 1024} KiB of the payload"
        client.settimeout(SETTLE_S * 5)
        try:
            client.sendall(b"\xc0\x00")
            answer = client.recv(2)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            answer = b""
    return "all sent; the broker " + ("answered a ping after it" if answer else "hung up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 10 MB publish")
    parser.add_argument("--megabytes", type=int, help="size of the publish (default 100)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.megabytes = args.megabytes or (10 if args.quick else 100)
    if args.serve:
        asyncio.run(serve())
        return
    print(f"signed 10,000-rule bundle: {bundle_bytes(10_000):,} bytes")
    print(f"largest lineage batch:     {MAX_BATCH_BYTES:,} bytes (shipping.MAX_BATCH_BYTES)")
    print(f"broker message limit:      {MAX_MESSAGE_BYTES:,} bytes (limits.MAX_MESSAGE_BYTES)")
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        port = int(child.stdout.readline())

        def memory() -> tuple[int, int]:
            child.stdin.write("\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
            rss, hwm = child.stdout.readline().split()  # type: ignore[union-attr]
            return int(rss), int(hwm)

        rss_before, _ = memory()
        outcome = publish_huge(port, args.megabytes)
        time.sleep(SETTLE_S)
        rss_after, hwm_after = memory()
    finally:
        child.terminate()
        child.wait()
    print(f"one {args.megabytes} MiB publish: {outcome}")
    print(
        f"broker RSS {rss_before / 1024:.0f} MiB before, {rss_after / 1024:.0f} MiB after, "
        f"peak {hwm_after / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
