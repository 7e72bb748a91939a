"""What popwrap's two ways of running share (popwrap.py: after checkpassword; popfilter.py: in
front of a POP3/IMAP server): telling the watcher about the session (Reporter, one datagram
per login and logout) and running the wrapped program as a child, its status passed on.

Reads: $TCPREMOTEIP (else the peer of stdin), the configuration through relayclient's cache.
Writes: datagrams to the watcher's socket; one line on stderr for each failure.
"""
import os

from ..smtp.relayclient import _say, _why, canonical_ip, load_settings, locate_config

EXIT_TEMPFAIL = 111
MAX_USER = 256
MAX_LINE = 8192                 # longer dialogue lines are copied but not interpreted
CHUNK = 65536


def say(text: str) -> None:
    _say(text, "popwrap")


def clean_user(user) -> str:
    """A user name fit for a datagram field, or "-" (unknown)."""
    if not user or len(user) > MAX_USER or not user.isprintable() or \
            user != "".join(user.split()):
        return "-"
    return user


class Reporter:
    """Sends login/logout for one client address to the watcher; failures are one line."""

    def __init__(self, config, socket_path=None):
        self.ip = canonical_ip(os.environ.get("TCPREMOTEIP")) or _peer_ip()
        self.path = socket_path
        self.protocol = self.user = None
        self.logged_in = False
        if self.ip is None:
            say("no client address (TCPREMOTEIP); no gate")
            return
        if socket_path:
            return
        config_path = os.path.abspath(locate_config(config))
        try:
            self.path = load_settings(config_path).get("popwrap_socket")
        except Exception as e:
            say(f"{config_path}: {_why(e)}; no gate for {self.ip}")
            return
        if not self.path:
            say(f"{config_path}: popwrap.socket is not set; no gate for {self.ip}")

    def send(self, kind: str) -> None:
        if self.ip is None or not self.path:
            return
        line = f"{kind} {self.ip} {clean_user(self.user)} {self.protocol} {os.getpid()}"
        send(self.path, line, 2.0)

    def login(self, protocol: str, user) -> None:
        if self.logged_in:
            return
        self.protocol, self.user, self.logged_in = protocol, user, True
        self.send("login")

    def logout(self) -> None:
        if self.logged_in:
            self.logged_in = False
            self.send("logout")


def send(path: str, line: str, timeout: float) -> None:
    """One datagram to the watcher at path (timeout 0: never wait); a failure is one line."""
    import _socket
    try:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        try:
            s.settimeout(timeout)
            s.sendto((line + "\n").encode("utf-8", "replace"), path)
        finally:
            s.close()
    except Exception as e:
        kind, ip = line.split(" ", 2)[:2]
        say(f"cannot reach the watcher at {path}: {_why(e)}; no {kind} for {ip}")


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

def spawn(argv, stdin=None, stdout=None) -> int:
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
        say(f"cannot run {argv[0]!r}: {_why(e)}")
    os._exit(EXIT_TEMPFAIL)


def forward_signals(pid: int) -> None:
    import _signal

    def forward(signum, frame):
        try:
            os.kill(pid, signum)
        except OSError:
            pass
    for name in ("SIGTERM", "SIGHUP"):
        _signal.signal(getattr(_signal, name), forward)


def wait_exit(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return EXIT_TEMPFAIL
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


