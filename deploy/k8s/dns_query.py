"""Ask one DNS server for a name's A records, with the standard library only (no dig on this machine).

    python3 deploy/k8s/dns_query.py SERVER NAME [--timeout SECONDS]

Prints the addresses, one a line, and exits 0 when the server answered with at least one; exits 1
otherwise (no answer in time, an error code, or no A record). cluster.sh uses it to check that the
cluster's DNS answers through the kube-dns Service's ClusterIP from the host.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys


def query(name: str) -> tuple[int, bytes]:
    """A recursive A query for ``name``; returns its id and the packet."""
    ident = int.from_bytes(os.urandom(2), "big")
    header = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.rstrip(".").split("."))
    return ident, header + labels + b"\x00" + struct.pack("!HH", 1, 1)


def skip_name(packet: bytes, offset: int) -> int:
    """The offset just past a (possibly compressed) name."""
    while True:
        length = packet[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2
        offset += 1 + length


def a_records(packet: bytes, ident: int) -> list[str]:
    """The A records of an answer to query ``ident``; raises ValueError for an error or a foreign reply."""
    got_id, flags, qdcount, ancount = struct.unpack("!HHHH", packet[:8])
    if got_id != ident:
        raise ValueError("reply to another query")
    if flags & 0x000F:
        raise ValueError(f"DNS error code {flags & 0x000F}")
    offset = 12
    for _ in range(qdcount):
        offset = skip_name(packet, offset) + 4
    addresses = []
    for _ in range(ancount):
        offset = skip_name(packet, offset)
        rtype, _rclass, _ttl, rdlength = struct.unpack("!HHIH", packet[offset:offset + 10])
        offset += 10
        if rtype == 1 and rdlength == 4:
            addresses.append(socket.inet_ntoa(packet[offset:offset + 4]))
        offset += rdlength
    return addresses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("server")
    parser.add_argument("name")
    parser.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args(argv)
    ident, packet = query(args.name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(args.timeout)
        try:
            sock.sendto(packet, (args.server, 53))
            reply, _ = sock.recvfrom(4096)
            addresses = a_records(reply, ident)
        except (OSError, ValueError, struct.error, IndexError) as error:
            sys.stderr.write(f"{args.server}: {args.name}: {error}\n")
            return 1
    sys.stdout.write("".join(f"{address}\n" for address in addresses))
    return 0 if addresses else 1


if __name__ == "__main__":
    sys.exit(main())
