"""HOST:PORT for the TCP listeners (metrics, Dovecot's auth policy): a literal IP address and
a port, checked before anything binds."""
from __future__ import annotations

import ipaddress


def parse_hostport(text: str) -> tuple[str, int]:
    """("127.0.0.1", 9469) from "127.0.0.1:9469", ("::1", 9469) from "[::1]:9469"; the host
    must be a literal IP address (no name lookups at start). ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9469 or [::1]:9469")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
        if ":" in host:
            sep = ""                                    # bare IPv6 needs brackets
    try:
        ipaddress.ip_address(host)
    except ValueError:
        sep = ""
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"{text!r} is not IP:PORT (e.g. 127.0.0.1:9469 or [::1]:9469)")
    return host, int(port)
