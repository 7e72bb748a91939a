"""`logkey relayclient [--config FILE] PROG [ARGS...]`: the SMTP-side wrapper of the 1999 design.

One module on purpose: it runs once per SMTP connection, and its start-up time is the point
(see below): each module it imported more would be paid on every connection, so the cache, the
check of each store and the exec stay in this one file.

Runs once per SMTP connection under tcpserver (`tcpserver ... logkey relayclient qmail-smtpd`):
reads TCPREMOTEIP, sets RELAYCLIENT="" when a gate is open for it, and execs PROG with the
environment otherwise untouched (a RELAYCLIENT already set, e.g. by tcprules, is kept as
is). qmail-smtpd then relays for that client and never learns why.

Reads: $TCPREMOTEIP; the configuration's os.stat; the cache file (below); for a `dir` store the
gate file, opened without following a symlink: open iff it is a regular file, its mtime (the
expiry, see stores/dirstore.py) is in the future and it holds the gate's record (a JSON object
naming its address, stores.base.record_data); for a `redis` store one GET per key through
stores/redisstore.py.
Writes: only the cache file, and only when it is missing or stale. Never the store.
Trust: TCPREMOTEIP must be a literal address (anything else: no RELAYCLIENT); a gate file name
is only ever the canonical address or its IPv6 network ("2001:db8:1:2::_64"); a gate file with
anything but its record in it is closed, with one line on stderr naming it. The cache is
believed only when it is a regular file owned by root or by us, writable by nobody else, and
names the configuration file and its current (st_dev, st_ino, st_size, st_mtime_ns,
st_ctime_ns); otherwise it is ignored and rewritten. Any error in any of this means no
RELAYCLIENT and one line on stderr, never a refused SMTP connection: PROG is exec'd anyway.
Config: found as by every command: --config FILE, else $LOGKEY_CONFIG, else
/etc/logkey/config.yaml (required). Uses `store` and `ipv6_prefix`.
Exit: none when PROG runs (exec); 111 (qmail's "temporary failure") when PROG is missing or
cannot be exec'd, with one line on stderr.

Start-up cost is the point, so this module imports nothing but modules already loaded by the
interpreter or built into it (os, sys, time, errno), `_json` (the C scanner, without the
`json` package's imports) and, only for an IPv6 client, `ipaddress`. The YAML configuration is parsed only on the slow path.

The cache: the settings this wrapper needs (store type, dir path or the redis spec,
ipv6_prefix; popwrap.socket for `logkey popwrap`, which shares this cache), as JSON,
derived from the configuration file's path:
    beside it: <config dir>/.<config name>.relayclient.json
               (e.g. /etc/logkey/.config.yaml.relayclient.json)
    else:      $LOGKEY_RUN_DIR (default /run/logkey)/relayclient.<config path, / as %2F>.json
It is read in that order; when neither is valid (missing, stale, tampered, unreadable) the
configuration is loaded once (slow path), the cache rewritten atomically (temp file in the
same directory, then rename) beside the configuration if that directory is writable by the
user tcpserver runs us as, else in the run dir, and the connection carries on. The cache's
mode is the configuration's read bits (it may hold a redis password), never group/other
write. A `redis` store always imports the redis client (the slow part); the tcprules cdb
export (`tcpserver -x`) is the path with no per-connection cost at all.
"""
import errno                                    # built into the interpreter: no file read
import os
import sys
import time

CACHE_VERSION = 2                               # 2: popwrap_socket added
DEFAULT_CONFIG = "/etc/logkey/config.yaml"      # as config.DEFAULT_PATH (not imported: yaml)
DEFAULT_RUN_DIR = "/run/logkey"
EXIT_TEMPFAIL = 111                             # qmail: temporary failure
MAX_CACHE = 64 * 1024
MAX_RECORD = 64 * 1024                          # as stores/dirstore.py: bigger is not a record
USAGE = "usage: logkey relayclient [--config FILE] PROG [ARGS...]"


def _say(text: str, who: str = "relayclient") -> None:
    """One line on stderr (tcpserver's log). Newlines in the text never split it."""
    try:
        sys.stderr.write(f"logkey {who}: " + " ".join(str(text).split()) + "\n")
        sys.stderr.flush()
    except Exception:
        pass


def _why(err: BaseException) -> str:
    return (err.strerror if isinstance(err, OSError) and err.strerror else str(err)) or \
        type(err).__name__


# -- the client address -------------------------------------------------------------------------

def _dotted_quad(text: str) -> bool:
    """A canonical IPv4 address: four decimal octets, no leading zeros, ASCII only."""
    parts = text.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not (0 < len(p) <= 3 and p.isascii() and p.isdigit()) or \
                (p[0] == "0" and len(p) > 1) or int(p) > 255:
            return False
    return True


def canonical_ip(text) -> str | None:
    """The canonical form of TCPREMOTEIP (IPv4-mapped -> IPv4, IPv6 compressed), else None."""
    if not text or len(text) > 45:
        return None
    if _dotted_quad(text):
        return text
    if text[:7].lower() == "::ffff:" and _dotted_quad(text[7:]):
        return text[7:]
    if ":" not in text or not text.isascii():
        return None
    import ipaddress                            # IPv6 only: the common IPv4 case never pays
    try:
        addr = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    if addr.scope_id:
        return None
    mapped = addr.ipv4_mapped
    return str(mapped) if mapped is not None else str(addr)


# -- the cache ----------------------------------------------------------------------------------

def locate_config(explicit: str | None) -> str:
    return explicit or os.environ.get("LOGKEY_CONFIG") or DEFAULT_CONFIG


def cache_paths(config_path: str) -> tuple[str, str]:
    """(beside the configuration, in the run dir) for this configuration file."""
    head, name = os.path.split(config_path)
    beside = os.path.join(head, "." + name + ".relayclient.json")
    escaped = config_path.replace("%", "%25").replace("/", "%2F")
    run_dir = os.environ.get("LOGKEY_RUN_DIR") or DEFAULT_RUN_DIR
    return beside, os.path.join(run_dir, "relayclient." + escaped + ".json")


def _signature(st) -> list:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class _ScanContext:
    """What `_json.make_scanner` reads: json.JSONDecoder's defaults."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo = None

    @staticmethod
    def parse_constant(name):
        raise ValueError(f"{name} is not allowed")


def _parse_json(text: str):
    """json.loads(text) without importing the json package (re, encoder...) when the C
    scanner is there: a ValueError for anything but exactly one JSON value."""
    try:
        from _json import make_scanner
    except ImportError:                         # no C accelerator: the real thing
        import json
        return json.loads(text)
    body = text.strip(" \t\r\n")
    try:
        value, end = make_scanner(_ScanContext)(body, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(body):
        raise ValueError("trailing data")
    return value


def _valid_settings(data) -> bool:
    """Whether the cached settings have the shapes the fast path relies on."""
    store, prefix = data.get("store"), data.get("ipv6_prefix")
    if prefix is not None and (type(prefix) is not int or not 1 <= prefix <= 128):
        return False
    if type(store) is not dict:
        return False
    sock = data.get("popwrap_socket", 0)
    if sock is not None and not (type(sock) is str and sock.startswith("/") and "\0" not in sock):
        return False
    if store.get("type") == "dir":
        path = store.get("path")
        return type(path) is str and path.startswith("/") and "\0" not in path
    return store.get("type") == "redis" and type(store.get("url")) is str


def read_cache(path: str, config_path: str, signature: list) -> dict | None:
    """The cached settings if `path` is a trusted, current cache for this configuration."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (st.st_mode & 0o170000) != 0o100000 or st.st_mode & 0o022 or \
                st.st_uid not in (0, os.geteuid()) or st.st_size > MAX_CACHE:
            return None
        raw = os.read(fd, MAX_CACHE + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        data = _parse_json(raw.decode("utf-8"))
    except Exception:                           # ValueError; SystemError from _json on some
        return None                             # truncated input when json.decoder is unloaded
    if type(data) is not dict or data.get("version") != CACHE_VERSION or \
            data.get("config") != config_path or data.get("config_stat") != signature or \
            not _valid_settings(data):
        return None
    return data


def write_cache(paths, data: dict, config_st) -> str | None:
    """Write the cache atomically to the first of `paths` that takes it; the path written, or
    None (and why, on stderr) when none did."""
    import json
    from ..atomic import write_atomic
    text = json.dumps(data, sort_keys=True, indent=1) + "\n"
    mode = (config_st.st_mode & 0o644) | 0o600  # no wider than the configuration, never writable
    problems = []
    # the group of whoever may read the configuration, when we may give it
    gid = config_st.st_gid if os.geteuid() == 0 or config_st.st_gid in os.getgroups() else -1
    for path in paths:
        head = os.path.dirname(path)
        try:
            if head and not os.path.isdir(head):
                os.makedirs(head, 0o755, exist_ok=True)
            write_atomic(path, text.encode(), mode=mode, gid=gid, sync_dir=False)
            return path
        except OSError as e:
            problems.append(f"{path}: {_why(e)}")
    _say("cannot write the cache (" + "; ".join(problems) + "): the configuration is read "
         "on every connection")
    return None


def load_settings(config_path: str) -> dict:
    """The settings, from the cache when it is current, else from the configuration (the slow
    path, which rewrites the cache). Raises OSError / LogkeyError when neither can be had."""
    config_st = os.stat(config_path)
    signature = _signature(config_st)
    paths = cache_paths(config_path)
    for path in paths:
        data = read_cache(path, config_path, signature)
        if data is not None:
            return data
    from ..config import load                   # the slow path: YAML
    cfg = load(config_path)
    data = {"version": CACHE_VERSION, "config": config_path, "config_stat": signature,
            "store": cfg.store, "ipv6_prefix": cfg.ipv6_prefix,
            "popwrap_socket": cfg.popwrap["socket"]}
    try:                                        # cache only what was read from this version
        same = _signature(os.stat(config_path)) == signature
    except OSError:
        same = False
    if same:
        try:
            write_cache(paths, data, config_st)
        except (TypeError, ValueError) as e:   # a store value JSON cannot hold
            _say(f"cannot cache the settings: {e}")
    return data


# -- the gate -----------------------------------------------------------------------------------

def gate_names(ip: str, ipv6_prefix: int | None) -> list[str]:
    """The dir store's file names for `ip` (stores.base.keys_for, "/" as "_")."""
    names = [ip]
    if ipv6_prefix and ":" in ip:
        import ipaddress
        names.append(str(ipaddress.ip_network(f"{ip}/{ipv6_prefix}", strict=False))
                     .replace("/", "_"))
    return names


def gate_file_open(path: str, key: str, now_ns: int) -> bool:
    """The dir store's test (stores/dirstore.py) in builtins: a regular file, not reached
    through a symlink, whose mtime is after `now_ns` and which holds `key`'s record. Raises
    OSError when it cannot be read."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if (st.st_mode & 0o170000) != 0o100000:
        _say(f"gate store: {path}: not a regular file; treated as closed")
        return False
    if st.st_mtime_ns <= now_ns:
        return False
    try:
        # O_NOFOLLOW: a symlink planted since the lstat fails (ELOOP); O_NONBLOCK: a FIFO
        # cannot hang us (ENXIO for a socket)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
            return False
        raise
    try:
        st = os.fstat(fd)
        raw = os.read(fd, MAX_RECORD + 1) if (st.st_mode & 0o170000) == 0o100000 else b""
    finally:
        os.close(fd)
    if st.st_mtime_ns <= now_ns:
        return False
    try:
        data = _parse_json(raw.decode("utf-8")) if len(raw) <= MAX_RECORD else None
    except Exception:                           # ValueError, UnicodeDecodeError, RecursionError
        data = None
    if type(data) is dict and data.get("key") == key:
        return True
    _say(f"gate store: {path}: not a gate record for this address; treated as closed")
    return False


def gate_open(ip: str, settings: dict) -> bool:
    """Whether a gate is open for `ip` now. Raises on a store error."""
    store, prefix = settings["store"], settings.get("ipv6_prefix")
    if store.get("type", "dir") == "dir":
        now = time.time_ns()
        for name in gate_names(ip, prefix):
            if gate_file_open(os.path.join(store["path"], name), name.replace("_", "/"), now):
                return True
        return False
    from ..stores import open_store             # redis: the client library is the cost
    gates = open_store(store)
    try:
        return gates.is_open(ip, prefix)
    finally:
        gates.close()


def decide(config: str | None) -> bool:
    """Whether to set RELAYCLIENT for this connection; False (and one line) on any error."""
    ip = canonical_ip(os.environ.get("TCPREMOTEIP"))
    if ip is None:
        return False                            # not an address: never relay for it
    config_path = os.path.abspath(locate_config(config))
    try:
        settings = load_settings(config_path)
    except Exception as e:
        _say(f"{config_path}: {_why(e)}; no RELAYCLIENT for {ip}")
        return False
    try:
        return gate_open(ip, settings)
    except Exception as e:
        _say(f"gate store: {_why(e)}; no RELAYCLIENT for {ip}")
        return False


# -- main ---------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    """`argv` is what follows "relayclient". Does not return when PROG runs."""
    config = None
    if argv[:1] == ["--config"] and len(argv) >= 2:
        config, argv = argv[1], argv[2:]
    elif argv[:1] and argv[0].startswith("--config="):
        config, argv = argv[0][9:], argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if not argv or not argv[0]:
        _say(USAGE)
        return EXIT_TEMPFAIL
    try:
        # Already set (tcprules gave this network relay, perhaps with a value to append to
        # recipients): nothing to decide, and the value is left as it is.
        if "RELAYCLIENT" not in os.environ and decide(config):
            os.environ["RELAYCLIENT"] = ""
    except Exception as e:                      # never: decide() catches. Still, serve SMTP.
        _say(f"unexpected error: {_why(e)}")
    try:
        import _signal                          # Python ignores SIGPIPE/SIGXFSZ; PROG must not
        for name in ("SIGPIPE", "SIGXFSZ"):
            if hasattr(_signal, name):
                _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
    except Exception:
        pass
    try:
        sys.stderr.flush()
    except Exception:
        pass
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        _say(f"cannot run {argv[0]}: {_why(e)}")
    except Exception as e:                      # e.g. a NUL in an argument
        _say(f"cannot run {argv[0]!r}: {_why(e)}")
    return EXIT_TEMPFAIL
