"""`logkey popwrap [--config FILE] [--filter] PROG [ARGS...]`: the POP side of the 1999 design.

Wrapper (the paper's 4.2.1 c), after checkpassword in a qmail-popup chain:
    tcpserver ... qmail-popup HOST checkpassword logkey popwrap qmail-pop3d Maildir
It runs only once authentication succeeded: it tells the watcher `login` for TCPREMOTEIP at
once, runs PROG as a child (not exec), forwards SIGTERM/SIGHUP to it, tells the watcher
`logout` when PROG exits (the gate's window then counts from the session's end) and exits with
PROG's status (128+N when PROG was killed by signal N).

Filter (the paper's 4.2.1 b), for POP3/IMAP servers started per connection by tcpserver or
inetd (stdin/stdout are the client's socket):
    tcpserver ... logkey popwrap --filter /usr/sbin/ipop3d
PROG runs with pipes; every byte is copied both ways unchanged and as soon as it is read. The
dialogue is watched (the protocol guessed from the greeting: `+OK` POP3, `* OK` IMAP): a POP3
PASS/APOP/AUTH answered `+OK`, or an IMAP LOGIN/AUTHENTICATE answered `tag OK`, is a login;
the session's end is the logout. Once STLS/STARTTLS is answered OK the rest is encrypted: the
filter stops interpreting and opens nothing. After a login it stops interpreting too.

Reads: $TCPREMOTEIP (else, for inetd, the peer of stdin), $USER (set by checkpassword; else
"-", unknown), the configuration through relayclient's cache (`popwrap.socket`).
Writes: datagrams `login|logout IP USER PROTOCOL PID` to the watcher's socket; never the store
(it runs as the mailbox user). Trust: anyone who may run this (or write to the socket) can claim
any TCPREMOTEIP: the socket's group and mode (`popwrap.socket_group/socket_mode`) decide who
may. Any failure to reach the watcher is one line on stderr; PROG runs anyway.
Exit: PROG's status; 111 when PROG cannot be run.
"""
import os
import sys

from .relayclient import _why, canonical_ip, load_settings, locate_config

EXIT_TEMPFAIL = 111
USAGE = "usage: logkey popwrap [--config FILE] [--imap] [--filter] PROG [ARGS...]"
MAX_USER = 256
MAX_LINE = 8192                 # longer dialogue lines are copied but not interpreted
CHUNK = 65536


def _say(text: str) -> None:
    try:
        sys.stderr.write("logkey popwrap: " + " ".join(str(text).split()) + "\n")
        sys.stderr.flush()
    except Exception:
        pass


def clean_user(user) -> str:
    """A user name fit for a datagram field, or "-" (unknown)."""
    if not user or len(user) > MAX_USER or not user.isprintable() or \
            user != "".join(user.split()):
        return "-"
    return user


class Reporter:
    """Sends login/logout for one client address to the watcher; failures are one line."""

    def __init__(self, config):
        self.ip = canonical_ip(os.environ.get("TCPREMOTEIP")) or _peer_ip()
        self.path = None
        self.protocol = self.user = None
        self.logged_in = False
        if self.ip is None:
            _say("no client address (TCPREMOTEIP); no gate")
            return
        config_path = os.path.abspath(locate_config(config))
        try:
            self.path = load_settings(config_path).get("popwrap_socket")
        except Exception as e:
            _say(f"{config_path}: {_why(e)}; no gate for {self.ip}")
            return
        if not self.path:
            _say(f"{config_path}: popwrap.socket is not set; no gate for {self.ip}")

    def send(self, kind: str) -> None:
        if self.ip is None or not self.path:
            return
        line = f"{kind} {self.ip} {clean_user(self.user)} {self.protocol} {os.getpid()}\n"
        import _socket
        try:
            s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
            try:
                s.settimeout(2.0)
                s.sendto(line.encode("utf-8", "replace"), self.path)
            finally:
                s.close()
        except Exception as e:
            _say(f"cannot reach the watcher at {self.path}: {_why(e)}; no {kind} for {self.ip}")

    def login(self, protocol: str, user) -> None:
        if self.logged_in:
            return
        self.protocol, self.user, self.logged_in = protocol, user, True
        self.send("login")

    def logout(self) -> None:
        if self.logged_in:
            self.logged_in = False
            self.send("logout")


def _peer_ip():
    """inetd sets no TCPREMOTEIP: the address of the peer on stdin, if it is a TCP socket."""
    try:
        import _socket
        s = _socket.socket(fileno=os.dup(0))
    except Exception:
        return None
    try:
        peer = s.getpeername()
        return canonical_ip(peer[0]) if isinstance(peer, tuple) else None
    except Exception:
        return None
    finally:
        s.close()


# -- the child ----------------------------------------------------------------------------------

def _spawn(argv, stdin=None, stdout=None) -> int:
    """Fork and exec PROG; the pid. In the child, stdin/stdout become the given fds."""
    pid = os.fork()
    if pid:
        return pid
    try:
        import _signal
        for name in ("SIGPIPE", "SIGXFSZ", "SIGTERM", "SIGHUP"):
            if hasattr(_signal, name):
                _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
        if stdin is not None:
            os.dup2(stdin[0], 0)
            os.dup2(stdout[1], 1)
            for fd in set(stdin + stdout):
                if fd > 2:
                    os.close(fd)
        os.execvp(argv[0], argv)
    except Exception as e:
        _say(f"cannot run {argv[0]!r}: {_why(e)}")
    os._exit(EXIT_TEMPFAIL)


def _forward_signals(pid: int) -> None:
    import _signal

    def forward(signum, frame):
        try:
            os.kill(pid, signum)
        except OSError:
            pass
    for name in ("SIGTERM", "SIGHUP"):
        _signal.signal(getattr(_signal, name), forward)


def _wait(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return EXIT_TEMPFAIL
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


# -- the dialogue -------------------------------------------------------------------------------

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
    pid = _spawn(argv, to_child, from_child)
    os.close(to_child[0])
    os.close(from_child[1])
    _forward_signals(pid)
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
        _say(f"copying: {_why(e)}")
    finally:
        for fd in (child_in, child_out):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
    status = _wait(pid)
    reporter.logout()
    return status


def main(argv: list) -> int:
    """`argv` is what follows "popwrap"."""
    config, filtering, protocol = None, False, "pop3"
    while argv[:1] and argv[0].startswith("-"):
        if argv[0] == "--config" and len(argv) >= 2:
            config, argv = argv[1], argv[2:]
        elif argv[0].startswith("--config="):
            config, argv = argv[0][9:], argv[1:]
        elif argv[0] == "--filter":
            filtering, argv = True, argv[1:]
        elif argv[0] == "--imap":                # a checkpassword chain in front of IMAP
            protocol, argv = "imap", argv[1:]
        elif argv[0] == "--":
            argv = argv[1:]
            break
        elif argv[0] in ("-h", "--help"):
            print(USAGE)
            return 0
        else:
            _say(f"unknown option {argv[0]}; {USAGE}")
            return EXIT_TEMPFAIL
    if not argv or not argv[0]:
        _say(USAGE)
        return EXIT_TEMPFAIL
    reporter = Reporter(config)
    if filtering:
        return run_filter(argv, reporter)
    reporter.login(protocol, os.environ.get("USER"))
    try:
        sys.stderr.flush()
    except Exception:
        pass
    pid = _spawn(argv)
    _forward_signals(pid)
    status = _wait(pid)
    reporter.logout()
    return status


def add_parser(sub):
    """Register `popwrap` on logkey.cli's subparsers (listed by `logkey --help`; the console
    script itself reaches main() through logkey.entry, without argparse)."""
    p = sub.add_parser(
        "popwrap", help="POP-side wrapper/filter: tell the watcher about logins and logouts",
        description="Run PROG as a child and report the session to the watcher over "
                    "popwrap.socket: after checkpassword (login at once, logout at PROG's "
                    "exit), or with --filter between tcpserver/inetd and a POP3/IMAP server "
                    "(login when the server accepts a PASS/APOP/AUTH/LOGIN/AUTHENTICATE).")
    p.add_argument("--config", metavar="FILE",
                   help="configuration file (default: $LOGKEY_CONFIG, else "
                        "/etc/logkey/config.yaml)")
    p.add_argument("--filter", action="store_true",
                   help="sit between the client socket (stdin/stdout) and PROG")
    p.add_argument("--imap", action="store_true",
                   help="the chain serves IMAP, not POP3 (wrapper mode)")
    p.add_argument("prog", metavar="PROG [ARGS...]", nargs="...")
    p.set_defaults(func=lambda a: main(
        (["--config", a.config] if a.config else []) + (["--filter"] if a.filter else [])
        + (["--imap"] if a.imap else []) + ["--"] + a.prog))
    return p
