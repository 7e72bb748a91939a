"""The Postfix policy delegation protocol as a sans-I/O codec: bytes in, requests out.

Reads: nothing (the caller feeds bytes). Writes: nothing (the caller sends `reply()`'s bytes).
Trust: every byte comes from the connecting client, which is Postfix's smtpd in normal use and
anyone with access to the socket otherwise; nothing here allocates more than `max_request`
bytes per connection.
Config: `policy.max_request` (bytes, default 65536).

The protocol (Postfix SMTPD_POLICY_README, "Protocol description"): a request is a sequence of
`name=value` lines separated by newline and terminated by an empty line; the reply is one
`name=value` attribute (`action=...`), also terminated by an empty line. Connections are
persistent: many requests, one after the other (a client may also pipeline them).

Rules applied here, each a `ProtocolError` (the caller logs it and closes the connection:
"in case of trouble the policy server must not send a reply", README):
- a request larger than `max_request` bytes (counted with its newlines), or that many bytes
  without the empty line that ends a request;
- a line without "=", or with an empty name ("=value");
- a NUL byte anywhere ("an attribute name must not contain '=', null or newline, and an
  attribute value must not contain null or newline");
- no `request=` attribute, or an empty one ("The 'request' attribute is required").
Lines end with "\\n" only, as Postfix sends them: a "\\r" is part of the value (so a CRLF
client's blank line "\\r" is a line without "=").
Attribute order does not matter, unknown attributes are kept but never looked at, and a
repeated attribute keeps its first value (the README allows first or last).
Bytes that are not UTF-8 (an 8-bit envelope address from an old client) do not fail the
request: names and values are decoded with `surrogateescape`, so they round-trip and never
compare equal to a valid address.
"""
from __future__ import annotations


DEFAULT_MAX_REQUEST = 65536


class ProtocolError(Exception):
    """The client broke the protocol; str() is one line, safe to log (no client bytes)."""


class Decoder:
    """Feed bytes as they arrive; get back every request they complete, as dicts.

    After a ProtocolError the decoder is spent: the caller closes the connection."""

    __slots__ = ("max_request", "keep", "_buf", "_scan", "_checked")

    def __init__(self, max_request: int = DEFAULT_MAX_REQUEST, keep=None):
        """`keep`: the attribute names the caller will look at (every line is still checked);
        the others are left out of the dicts, which is faster ("The policy server should
        ignore any attributes that it does not care about"). None keeps all."""
        self.max_request = max_request
        self.keep = None if keep is None else _Keep(keep)
        self._buf = bytearray()
        self._scan = 0                  # where to resume looking for the terminator
        self._checked = 0               # complete lines of a partial request checked so far

    @property
    def pending(self) -> bool:
        """True while part of a request is buffered."""
        return bool(self._buf)

    def feed(self, data: bytes) -> list[dict[str, str]]:
        if self._buf:
            return self._feed_buffered(data)
        # Fast path, nothing buffered (Postfix writes each request whole): work on `data`.
        out = []
        pos, size = 0, len(data)
        while pos < size:
            # An empty line ends a request: "\n" at the start (no attributes) or "\n\n".
            if data[pos] == 0x0A:
                end = pos
            else:
                end = data.find(b"\n\n", pos)
                if end < 0:
                    break
                end += 1                # the request's last line ends at `end`
            if end + 1 - pos > self.max_request:
                self._fail(f"request larger than {self.max_request} bytes")
            out.append(parse(data[pos:end], self.keep))
            pos = end + 1
        if pos < size:                  # the start of the next request: keep it
            if size - pos > self.max_request:
                self._fail(f"request larger than {self.max_request} bytes")
            self._buf = bytearray(data[pos:])
            self._scan = len(self._buf)
            self._check_partial()
        return out

    def _feed_buffered(self, data: bytes) -> list[dict[str, str]]:
        buf = self._buf
        buf += data
        out = []
        while buf:
            if buf[0] == 0x0A:
                end = 0
            else:
                end = buf.find(b"\n\n", max(self._scan - 1, 0))
                if end < 0:
                    if len(buf) > self.max_request:
                        self._fail(f"request larger than {self.max_request} bytes")
                    self._scan = len(buf)
                    self._check_partial()
                    break
                end += 1
            size = end + 1
            if size > self.max_request:
                self._fail(f"request larger than {self.max_request} bytes")
            block = bytes(buf[:end])
            del buf[:size]
            self._scan = self._checked = 0
            out.append(parse(block, self.keep))
        return out

    def _check_partial(self) -> None:
        """Refuse a bad line as soon as it is complete, not when the request ends: a client
        sending garbage is disconnected at once rather than after the idle timeout."""
        last = self._buf.rfind(b"\n", self._checked)
        if last < 0:
            return
        lines = bytes(self._buf[self._checked:last])
        self._checked = last + 1
        if b"\0" in lines:
            self._fail("NUL byte in request")
        for line in lines.split(b"\n"):
            if b"=" not in line:
                self._fail("line without '='")
            if line[0] == 0x3D:
                self._fail("attribute with an empty name")

    def _fail(self, reason: str):
        self._buf = bytearray()
        raise ProtocolError(reason)


_NOT_EQ_NL = bytes(sorted(set(range(256)) - {0x0A, 0x3D}))


class _Keep:
    """Precomputed needles for parse(block, keep)."""

    def __init__(self, names):
        self.names = [(name, b"\n" + name.encode() + b"=") for name in names]


def first_value(block: bytes, needle: bytes) -> bytes | None:
    """The value of the first line of `block` (lines each ending in "\n") that starts with
    the attribute `needle` names (b"\nNAME="); None when no line does."""
    if block.startswith(needle[1:]):
        start = len(needle) - 1
    else:
        start = block.find(needle)
        if start < 0:
            return None
        start += len(needle)
    return block[start:block.index(b"\n", start)]


def parse(block: bytes, keep: _Keep | None = None) -> dict[str, str]:
    """One request's lines (without the terminating empty line) as a dict; ProtocolError if
    they break the rules above. With `keep`, only those attributes are in the dict."""
    if b"\0" in block:
        raise ProtocolError("NUL byte in request")
    if not block:
        raise ProtocolError("no request= attribute")
    if keep is None:
        lines = block[:-1].decode("utf-8", "surrogateescape").split("\n")  # ends with "\n"
        lines.reverse()                             # so that the first of repeats wins
        try:
            attrs = dict([line.split("=", 1) for line in lines])
        except ValueError:                          # a line without "=" splits into one part
            raise ProtocolError("line without '='") from None
        if "" in attrs:
            raise ProtocolError("attribute with an empty name")
    else:
        # Keep only "=" and "\n": a line without "=" leaves a bare "\n" (C speed, no loop).
        shape = block.translate(None, _NOT_EQ_NL)
        if shape[0] == 0x0A or b"\n\n" in shape:
            raise ProtocolError("line without '='")
        if block[0] == 0x3D or b"\n=" in block:
            raise ProtocolError("attribute with an empty name")
        attrs = {}
        for name, needle in keep.names:
            value = first_value(block, needle)
            if value is not None:
                attrs[name] = value.decode("utf-8", "surrogateescape")
    if not attrs.get("request"):
        raise ProtocolError("no request= attribute")
    return attrs


# Deletes every byte but NUL, "\n" and "=": what is left is a request's shape.
_NOT_NUL_EQ_NL = bytes(sorted(set(range(256)) - {0x00, 0x0A, 0x3D}))


_POSTFIX_FIRST = b"request=smtpd_access_policy\n"     # the first line of what smtpd sends
_CLIENT_ADDRESS = b"\nclient_address="


def whole_request_python(data: bytes, max_request: int = DEFAULT_MAX_REQUEST
                         ) -> tuple[bytes, bytes | None] | None:
    """The fast path for what Postfix sends on a persistent connection, one request per
    write: when `data` is exactly one complete request that keeps every rule above, its
    `request` and `client_address` values as raw bytes (the address None when absent).
    Anything else (part of a request, several, a broken one) gives None, and the caller
    feeds `data` to a Decoder, which answers it or raises the ProtocolError.
    (This runs once per request, so it is written for CPython's costs: a slice compared
    rather than endswith/startswith, which parse their arguments; `0 in b` (memchr) rather
    than `b"\\0" in b`, which first fails to read b"\\0" as an int and formats that error.)"""
    if data[-2:] != b"\n\n" or len(data) > max_request or data[0] in b"\n=" \
            or data.find(b"\n=") >= 0:
        return None
    shape = data.translate(None, _NOT_NUL_EQ_NL)
    # Every line holds "=" (an empty line, or one without "=", leaves "\n\n" before the end
    # or a leading "\n": so this is also the one request in `data`), no NUL, no line starts
    # with "=".
    if shape[0] == 0x0A or shape.find(b"\n\n") != len(shape) - 2 or 0 in shape:
        return None
    if data[:28] == _POSTFIX_FIRST:       # the first line: the first request= is this one
        _, found, rest = data.partition(_CLIENT_ADDRESS)  # not the first line: after "\n"
        return b"smtpd_access_policy", rest.partition(b"\n")[0] if found else None
    request = first_value(data, b"\nrequest=")
    if not request:
        return None
    return request, first_value(data, _CLIENT_ADDRESS)


# The same answers in one pass in C (_request.c, built where a compiler is; ~0.3 us a request
# against ~2.4 us here); tests/test_policy_request.py holds the two to each other.
try:
    from ._request import whole_request
except ImportError:
    whole_request = whole_request_python


def reply(action: str) -> bytes:
    """The reply for an action: b"action=<action>\\n\\n"."""
    if "\n" in action or "\0" in action or not action:
        raise ValueError(f"not a valid action: {action!r}")
    return b"action=" + action.encode() + b"\n\n"


def encode(attrs: dict[str, str]) -> bytes:
    """A request as a client (Postfix) sends it; for tests and tools."""
    return b"".join(f"{k}={v}\n".encode("utf-8", "surrogateescape")
                    for k, v in attrs.items()) + b"\n"
