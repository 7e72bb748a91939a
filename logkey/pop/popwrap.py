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

Dovecot's post-login script (`--dovecot`, docs/dovecot-direct.md), run by script-login after
a successful POP3/IMAP login:
    service imap-postlogin { executable = script-login /usr/local/bin/logkey popwrap --dovecot
                             --imap --socket /run/logkey/popwrap.sock }
script-login appends its own path to those arguments and runs them with a clean environment
(IP, LOCAL_IP, USER and the userdb fields); popwrap sends one `postlogin IP USER PROTOCOL PID`
datagram without waiting (a full or missing socket is one line on stderr, which Dovecot logs)
and execs the rest of the chain with the environment and the client's fds untouched. The
session itself then runs in Dovecot's pop3/imap process, which tells nobody when it ends: the
gate lasts `window` from the login. Nothing here can refuse or delay a login: every failure is
one line and the exec. `--socket PATH` names the watcher's socket without reading the
configuration (the fastest start); else `--config FILE` as above (the environment is clean:
no $LOGKEY_CONFIG).
"""
import os
import sys

from ..smtp.relayclient import _why, canonical_ip, load_settings, locate_config
from .session import (EXIT_TEMPFAIL, Reporter, clean_user, forward_signals, say, send, spawn,
                      wait_exit)

USAGE = ("usage: logkey popwrap [--config FILE | --socket PATH] [--imap] "
         "[--filter | --dovecot] PROG [ARGS...]")


# -- Dovecot's post-login script ---------------------------------------------------------------

def postlogin(argv, config, socket_path, protocol) -> int:
    """Report the login script-login describes in the environment, then exec argv (the rest of
    the chain, ending with script-login itself) whatever happened."""
    ip = canonical_ip(os.environ.get("IP"))
    if ip is None:
        say(f"no client address ($IP={os.environ.get('IP', '')[:64]!r}); no gate")
    else:
        path = socket_path
        if not path:
            config_path = os.path.abspath(locate_config(config))
            try:
                path = load_settings(config_path).get("popwrap_socket")
            except Exception as e:
                say(f"{config_path}: {_why(e)}; no gate for {ip}")
            else:
                if not path:
                    say(f"{config_path}: popwrap.socket is not set; no gate for {ip}")
        if path:
            send(path, f"postlogin {ip} {clean_user(os.environ.get('USER'))} {protocol} "
                       f"{os.getpid()}", 0.0)
    try:
        sys.stderr.flush()
    except Exception:
        pass
    try:
        os.execvpe(argv[0], argv, _first_environ())
    except Exception as e:
        say(f"cannot run {argv[0]!r}: {_why(e)}")
    return EXIT_TEMPFAIL


def _first_environ():
    """The environment this process was started with, byte for byte: Python's C locale
    coercion adds LC_CTYPE to os.environ (PEP 538), which the chain must not inherit."""
    try:
        with open("/proc/self/environ", "rb") as f:
            data = f.read()
    except OSError:
        return os.environ
    env = {}
    for item in data.split(b"\0"):
        key, eq, value = item.partition(b"=")
        if eq and key:
            env[key] = value
    return env


# -- the dialogue -------------------------------------------------------------------------------

def main(argv: list) -> int:
    """`argv` is what follows "popwrap"."""
    config, socket_path, mode, protocol = None, None, None, "pop3"
    while argv[:1] and argv[0].startswith("-"):
        if argv[0] in ("--config", "--socket") and len(argv) >= 2:
            if argv[0] == "--config":
                config = argv[1]
            else:
                socket_path = argv[1]
            argv = argv[2:]
        elif argv[0].startswith("--config="):
            config, argv = argv[0][9:], argv[1:]
        elif argv[0].startswith("--socket="):
            socket_path, argv = argv[0][9:], argv[1:]
        elif argv[0] in ("--filter", "--dovecot") and mode in (None, argv[0]):
            mode, argv = argv[0], argv[1:]
        elif argv[0] == "--imap":                # a checkpassword chain in front of IMAP
            protocol, argv = "imap", argv[1:]
        elif argv[0] == "--pop3":
            protocol, argv = "pop3", argv[1:]
        elif argv[0] == "--":
            argv = argv[1:]
            break
        elif argv[0] in ("-h", "--help"):
            print(USAGE)
            return 0
        else:
            say(f"unknown option {argv[0]}; {USAGE}")
            return EXIT_TEMPFAIL
    if not argv or not argv[0]:
        say(USAGE)
        return EXIT_TEMPFAIL
    if mode == "--dovecot":
        return postlogin(argv, config, socket_path, protocol)
    reporter = Reporter(config, socket_path)
    if mode == "--filter":
        from .popfilter import run_filter       # only the filter needs the dialogue parser
        return run_filter(argv, reporter)
    reporter.login(protocol, os.environ.get("USER"))
    try:
        sys.stderr.flush()
    except Exception:
        pass
    pid = spawn(argv)
    forward_signals(pid)
    status = wait_exit(pid)
    reporter.logout()
    return status


def add_parser(sub):
    """Register `popwrap` on logkey.commands.cli's subparsers (listed by `logkey --help`; the console
    script itself reaches main() through logkey.entry, without argparse)."""
    p = sub.add_parser(
        "popwrap", help="POP-side wrapper/filter: tell the watcher about logins and logouts",
        description="Run PROG as a child and report the session to the watcher over "
                    "popwrap.socket: after checkpassword (login at once, logout at PROG's "
                    "exit), or with --filter between tcpserver/inetd and a POP3/IMAP server "
                    "(login when the server accepts a PASS/APOP/AUTH/LOGIN/AUTHENTICATE), or "
                    "with --dovecot as Dovecot's post-login script (login at once, then exec "
                    "PROG).")
    p.add_argument("--config", metavar="FILE",
                   help="configuration file (default: $LOGKEY_CONFIG, else "
                        "/etc/logkey/config.yaml)")
    p.add_argument("--socket", metavar="PATH",
                   help="the watcher's popwrap socket, without reading the configuration")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--filter", action="store_true",
                      help="sit between the client socket (stdin/stdout) and PROG")
    mode.add_argument("--dovecot", action="store_true",
                      help="Dovecot's post-login script (script-login): report the login in "
                           "$IP/$USER at once, then exec PROG; the gate lasts window")
    p.add_argument("--imap", action="store_true",
                   help="the chain serves IMAP, not POP3 (wrapper and --dovecot modes)")
    p.add_argument("--pop3", action="store_true", help="the chain serves POP3 (the default)")
    p.add_argument("prog", metavar="PROG [ARGS...]", nargs="...")
    p.set_defaults(func=lambda a: main(
        (["--config", a.config] if a.config else [])
        + (["--socket", a.socket] if a.socket else []) + (["--filter"] if a.filter else [])
        + (["--dovecot"] if a.dovecot else []) + (["--imap"] if a.imap else [])
        + ["--"] + a.prog))
    return p
