"""The export formats: sorted gate keys in, the text of a map out. Pure (no files, no tools;
exporttargets.py writes them and runs the tools). See exporttargets.py for what each format is for.

Trust: keys are re-parsed with `ipaddress`; anything else is left out (with a debug line), so
no map gets anything but addresses and networks.
"""
from __future__ import annotations

import ipaddress
import logging

log = logging.getLogger("logkey")

FORMATS = ("lmdb", "sendmail", "exim", "opensmtpd", "text", "tcprules")


def _net(key: str):
    """The key as an ip_network (an address is a /32 or /128); ValueError if it is not one."""
    return ipaddress.ip_network(key, strict=True)


def sorted_keys(keys) -> list[str]:
    """Valid gate keys, deduplicated, in a stable order: IPv4 then IPv6, by address. Anything
    that does not parse is dropped (the stores only hold valid keys; this is a second wall)."""
    nets = {}
    for key in keys:
        try:
            net = _net(key)
        except ValueError:
            log.debug("export: %r is not an address or network; left out", key)
            continue
        nets[key] = net
    return sorted(nets, key=lambda k: (nets[k].version, int(nets[k].network_address),
                                       nets[k].prefixlen))


def _is_network(net) -> bool:
    return net.prefixlen != net.max_prefixlen


def v6_prefix_fields(net) -> str | None:
    """2001:db8:1:2::/64 -> "2001:db8:1:2": the form Postfix and sendmail match by truncating
    the client's address at ':'. None when the prefix length is not a multiple of 16."""
    if net.prefixlen % 16:
        return None
    return _v6_fields(net.network_address.exploded.split(":")[: net.prefixlen // 16])


def _v6_fields(groups) -> str:
    """16-bit groups without leading zeros and without `::` (2001:db8:0:0:0:0:0:50)."""
    return ":".join(f"{int(g, 16):x}" for g in groups)


def _addr(net) -> str:
    return str(net.network_address) if not _is_network(net) else str(net)


def render(fmt: str, keys: list[str], base: str | None = None) -> str:
    """The text of a file export (every format but lmdb) for these sorted keys. For tcprules,
    `base` is the site's rules text, appended after the gate lines."""
    lines = []
    denied = _exact_denies(base) if fmt == "tcprules" and base else set()
    for key in keys:
        net = _net(key)
        v6 = net.version == 6
        if fmt == "text" or fmt == "opensmtpd":
            lines.append(_addr(net))
        elif fmt == "exim":
            lines.append(f'"{_addr(net)}"' if v6 else _addr(net))
        elif fmt == "sendmail":
            if not v6:
                lines.append(f"Connect:{_addr(net)} RELAY")
            elif not _is_network(net):
                # sendmail looks up the client as its build prints it: Debian's uncompressed
                # (IPv6:2001:db8:0:0:0:0:0:50), others compressed; both lines, when they differ
                full = _v6_fields(net.network_address.exploded.split(":"))
                lines.append(f"Connect:IPv6:{full} RELAY")
                if full != _addr(net):
                    lines.append(f"Connect:IPv6:{_addr(net)} RELAY")
            elif (fields := v6_prefix_fields(net)) is not None:
                lines.append(f"Connect:IPv6:{fields} RELAY")
            else:
                log.debug("sendmail export: %s: prefix not a multiple of 16; left out", key)
        elif fmt == "tcprules":
            if v6:
                log.debug("tcprules export: %s left out (Debian's tcprules has no IPv6)", key)
            elif key in denied:
                log.debug("tcprules export: %s left out (the base rules deny it)", key)
            else:
                lines.append(f'{key}:allow,RELAYCLIENT=""')
        else:
            raise ValueError(f"no text form for export format {fmt!r}")
    text = "".join(line + "\n" for line in lines)
    if fmt == "opensmtpd":      # a list table even when empty: smtpd refuses to start on an
        text = "# @list\n" + text      # empty file table used for `from src` lookups
    if fmt == "tcprules" and base:
        text += base if base.endswith("\n") else base + "\n"
    return text


def lmdb_keys(keys: list[str]) -> set[str]:
    """Postfix access-table keys for these gate keys (check_client_access lookup forms)."""
    out = set()
    for key in keys:
        net = _net(key)
        if not _is_network(net):
            out.add(_addr(net))
        elif (fields := v6_prefix_fields(net)) is not None:
            out.add(fields)
        else:
            log.debug("lmdb export: %s: prefix not a multiple of 16; left out", key)
    return out


def _exact_denies(base: str) -> set[str]:
    """IPv4 addresses the base rules name exactly with a deny."""
    out = set()
    for line in base.splitlines():
        addr, sep, rest = line.strip().partition(":")
        if sep and rest.split(",")[0] == "deny":
            try:
                ip = ipaddress.IPv4Address(addr)
            except ValueError:
                continue
            out.add(str(ip))
    return out


