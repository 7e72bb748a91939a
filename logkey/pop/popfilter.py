"""`logkey popwrap --filter PROG`: sit between the client's socket (stdin/stdout, from
tcpserver or inetd) and a POP3/IMAP server, copy every byte both ways unchanged, and report
the login the server accepts (see popwrap.py for the whole story and the trust it needs).
"""
import os

from .session import CHUNK, MAX_LINE, Reporter, forward_signals, say, spawn, wait_exit
from ..smtp.relayclient import _why


def _sasl_user(mech: str, data: list) -> str | None:
    """The authentication identity from a PLAIN or LOGIN exchange's first client line."""
    if not data:
        return None
    import binascii
    try:
        raw = binascii.a2b_base64(data[0].strip() or b"=")
    except (binascii.Error, ValueError):
        return None
    if mech == "PLAIN":
        parts = raw.split(b"\0")
        raw = parts[1] if len(parts) == 3 else b""
    elif mech != "LOGIN":
        return None
    try:
        return raw.decode("utf-8") or None
    except UnicodeDecodeError:
        return None


class Lines:
    """Splits a byte stream into lines (CRLF or LF); an over-long line comes out as None."""

    def __init__(self):
        self.buf = b""
        self.skipping = False

    def feed(self, data: bytes):
        self.buf += data
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                if len(self.buf) > MAX_LINE:
                    self.buf, self.skipping = b"", True
                return
            line, self.buf = self.buf[:i], self.buf[i + 1:]
            if self.skipping:
                self.skipping = False
                yield None
            else:
                yield line[:-1] if line.endswith(b"\r") else line


class Dialogue:
    """Watches a POP3 or IMAP dialogue for a successful login. `state`: greeting, pop3, imap,
    then done (logged in, blind after STLS/STARTTLS, or not understood): nothing more is read."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter
        self.state = "greeting"
        self.client, self.server = Lines(), Lines()
        self.pending = []               # POP3: commands sent, not yet answered (pipelining)
        self.multiline = False          # POP3: inside a multi-line +OK answer
        self.sasl = None                # POP3/IMAP: [tag, mech, client lines] of an AUTH
        self.tags = {}                  # IMAP: tag -> (command, user)
        self.literal = 0                # IMAP: bytes of a client literal still to skip
        self.continued = False          # IMAP: the next client line continues a command
        self.user = None                # POP3: the USER name

    def from_client(self, data: bytes) -> None:
        if self.state == "done":
            return
        if self.state == "imap":
            return self._imap_client(data)
        for line in self.client.feed(data):
            if self.state == "pop3":
                self._pop3_client(line)

    def from_server(self, data: bytes) -> None:
        for line in self.server.feed(data):
            if self.state == "done":
                return
            if line is None:
                continue
            if self.state == "greeting":
                self.state = "pop3" if line.startswith(b"+OK") else \
                    "imap" if line[:4].upper() == b"* OK" else "done"
            elif self.state == "pop3":
                self._pop3_server(line)
            else:
                self._imap_server(line)

    # POP3 ---------------------------------------------------------------------------------
    def _pop3_client(self, line) -> None:
        if self.sasl is not None:
            if line is not None:
                self.sasl[2].append(line)
            return
        words = line.split() if line is not None else []
        cmd = words[0].upper().decode("ascii", "replace") if words else ""
        arg = words[1].decode("utf-8", "replace") if len(words) > 1 else None
        if cmd == "AUTH" and arg is not None:
            self.sasl = [None, arg.upper(), words[2:3]]
        self.pending.append((cmd, arg))

    def _pop3_server(self, line: bytes) -> None:
        if self.multiline:
            self.multiline = line != b"."
            return
        if line.startswith(b"+ ") or line == b"+":
            return                                  # a SASL challenge
        ok = line.startswith(b"+OK")
        if not ok and not line.startswith(b"-ERR"):
            return
        cmd, arg = self.pending.pop(0) if self.pending else ("", None)
        sasl = None
        if cmd == "AUTH":
            sasl, self.sasl = self.sasl, None
        if not ok:
            return
        if cmd == "USER":
            self.user = arg
        elif cmd == "APOP":
            self._login("pop3", arg)
        elif cmd == "PASS":
            self._login("pop3", self.user)
        elif cmd == "AUTH" and sasl is not None:
            self._login("pop3", _sasl_user(sasl[1], sasl[2]))
        elif cmd == "STLS":
            self.state = "done"                     # encrypted from here: open nothing
        elif cmd in ("CAPA", "AUTH", "LIST", "UIDL", "TOP", "RETR"):
            self.multiline = cmd in ("CAPA", "AUTH") or arg is None or cmd in ("TOP", "RETR")

    # IMAP ---------------------------------------------------------------------------------
    def _imap_client(self, data: bytes) -> None:
        while data and self.state == "imap":
            if self.literal:
                n = min(self.literal, len(data))
                self.literal -= n
                data = data[n:]
                continue
            i = data.find(b"\n")
            chunk, data = (data, b"") if i < 0 else (data[:i + 1], data[i + 1:])
            for line in self.client.feed(chunk):
                self._imap_client_line(line)

    def _imap_client_line(self, line) -> None:
        if line is None:
            return
        continued, self.continued = self.continued, False
        if line.endswith(b"}"):                     # a literal follows: {n} or {n+}
            j = line.rfind(b"{")
            size = line[j + 1:-1].rstrip(b"+")
            if j >= 0 and size.isdigit() and len(size) < 12:
                self.literal = int(size)
                self.continued = True
        if continued:
            return
        if self.sasl is not None:
            self.sasl[2].append(line)
            return
        words = line.split()
        if len(words) < 2:
            return
        tag = words[0]
        cmd = words[1].upper().decode("ascii", "replace")
        user = None
        if cmd == "LOGIN" and len(words) > 2 and not words[2].startswith(b"{"):
            user = words[2].strip(b'"').decode("utf-8", "replace")
        elif cmd == "AUTHENTICATE" and len(words) > 2:
            self.sasl = [tag, words[2].upper().decode("ascii", "replace"), words[3:4]]
        if len(self.tags) < 100:
            self.tags[tag] = (cmd, user)

    def _imap_server(self, line: bytes) -> None:
        if line.startswith(b"*") or line.startswith(b"+"):
            return
        words = line.split(None, 2)
        if len(words) < 2 or words[0] not in self.tags:
            return
        cmd, user = self.tags.pop(words[0])
        sasl = None
        if self.sasl is not None and self.sasl[0] == words[0]:
            sasl, self.sasl = self.sasl, None
        if words[1].upper() != b"OK":
            return
        if cmd == "LOGIN":
            self._login("imap", user)
        elif cmd == "AUTHENTICATE":
            self._login("imap", _sasl_user(sasl[1], sasl[2]) if sasl else None)
        elif cmd == "STARTTLS":
            self.state = "done"

    def _login(self, protocol: str, user) -> None:
        self.state = "done"                         # nothing after a login matters
        self.reporter.login(protocol, user)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def run_filter(argv, reporter: Reporter) -> int:
    """Copy stdin -> PROG -> stdout unchanged, watching the dialogue; PROG's status."""
    to_child, from_child = os.pipe(), os.pipe()
    pid = spawn(argv, to_child, from_child)
    os.close(to_child[0])
    os.close(from_child[1])
    forward_signals(pid)
    import select
    dialogue = Dialogue(reporter)
    child_in, child_out = to_child[1], from_child[0]
    client_open = True
    try:
        while True:
            fds = [child_out] + ([0] if client_open else [])
            ready = select.select(fds, [], [])[0]
            if 0 in ready:
                data = os.read(0, CHUNK) if client_open else b""
                if data:
                    try:
                        _write_all(child_in, data)
                    except OSError:             # PROG stopped reading: it is going away
                        pass
                    dialogue.from_client(data)
                else:
                    client_open = False
                    os.close(child_in)
                    child_in = -1
            if child_out in ready:
                data = os.read(child_out, CHUNK)
                if not data:
                    break
                try:
                    _write_all(1, data)
                except OSError:                 # the client went away: PROG learns by EOF
                    if client_open:
                        client_open = False
                        os.close(child_in)
                        child_in = -1
                dialogue.from_server(data)
    except OSError as e:
        say(f"copying: {_why(e)}")
    finally:
        for fd in (child_in, child_out):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
    status = wait_exit(pid)
    reporter.logout()
    return status
