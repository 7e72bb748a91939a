"""Exported maps: the open gates as files the SMTP side reads with no per-connection cost.

Formats (the `exports:` config key, or `logkey export --format F` on demand):
- lmdb:      a Postfix `lmdb:` table for check_client_access, value `OK`. `path` is the map
             name as main.cf writes it (the file is PATH.lmdb). Kept in sync in place with
             `postmap -i lmdb:PATH` (new keys on stdin) and `postmap -d - lmdb:PATH` (gone keys on
             stdin), never replaced by rename: smtpd processes keep the file open, and LMDB
             updates reach them without a restart.
- sendmail:  the access text file, `Connect:1.2.3.4 RELAY` / `Connect:IPv6:2001:db8:0:0:0:0:0:1
             RELAY` (the form Debian's sendmail looks up) and `Connect:IPv6:2001:db8::1 RELAY`;
             where PATH.db exists, then `makemap hash`: built as a temp map beside it and
             renamed to PATH.db (sendmail reopens a map whose file changed).
- exim:      one address or network per line for `hosts = net-iplsearch;FILE` (IPv6 keys quoted,
             as iplsearch requires).
- opensmtpd: one address or network per line, a `table NAME file:PATH` file, after a first
             line `# @list` (smtpd takes a file with no entries for a key-value table, and
             refuses to start when one is used for `from src <NAME>`); smtpd reads it again on
             `smtpctl update table NAME`, which needs root (docs/mta/opensmtpd.md).
- text:      one gate key per line.
- tcprules:  `path` is the cdb for `tcpserver -x`: gate lines `IP:allow,RELAYCLIENT=""` first,
             then the site's `base` rules file verbatim, compiled with `tcprules CDB CDB.tmp`
             (which renames atomically). Debian's ucspi-tcp 0.88 has no IPv6 (its tcprules rejects
             an IPv6 rule), so IPv6 gates are left out, with a debug line. A base rule that denies
             an exact IPv4 address keeps it: a gate never turns a site's deny into an allow.
IPv6 networks (ipv6_prefix) become, for Postfix and sendmail, the leading 16-bit groups these
MTAs match by truncating the client address (`2001:db8:1:2` for 2001:db8:1:2::/64; only prefix
lengths that are multiples of 16); Exim, OpenSMTPD and text take the CIDR form.

Each export holds exactly the keys of the gates open at `now`, sorted (IPv4, then IPv6). A
file is rewritten only when its content changes: written to a temp file in the same directory,
fsynced, renamed over the old one (its mode and owner kept; new files 0644), then the optional
`command` runs (/bin/sh -c, 10 s limit, failure logged once). Any failure (tool missing,
unwritable directory, base file unreadable) is logged once per export and retried on the next
update; it never stops the caller. Successful writes log at debug only, so gates expiring cause
no log traffic.

Reads: gate records given by the caller (the watcher, or the store for `logkey export`), the
tcprules base file, an existing export file (to skip an unchanged first write), the lmdb map
(`postmap -s`, once, to learn what it holds).
Writes: the configured export files and PATH.db / PATH.lmdb / the cdb beside them.
Trust: keys are validated gate keys (stores/base.check_key) and are re-parsed with `ipaddress`
before they are written, so no file gets anything but addresses and networks; `command` and
`base` come from the root-owned configuration and are trusted as such.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

from .. import atomic
from ..errors import LogkeyError
from .mapformats import FORMATS, lmdb_keys, render, sorted_keys

log = logging.getLogger("logkey")

TOOL_TIMEOUT = 60.0        # seconds for postmap, makemap, tcprules
COMMAND_TIMEOUT = 10.0     # seconds for an export's `command`


class ExportError(LogkeyError):
    """An export could not be brought up to date; str() is one line."""


# --- helpers ------------------------------------------------------------------------------

def run_bounded(argv: list[str], *, input: bytes | None = None, timeout: float,
                env: dict | None = None) -> subprocess.CompletedProcess:
    """Run argv in its own process group; on timeout the whole group is killed and
    ExportError raised. Output is captured."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else
                                subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, env=env)
    except OSError as exc:
        raise ExportError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.communicate()
        raise ExportError(f"{os.path.basename(argv[0])} still running after {timeout:.0f} s; "
                          "killed") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _tail(data: bytes) -> str:
    text = data.decode(errors="replace").strip().replace("\n", " | ")
    return text[-300:]


def _tool(name: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}")
                                       if os.access(p, os.X_OK)), None)
    if path is None:
        raise ExportError(f"{name} not found (install the package that provides it)")
    return path


def write_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data`, atomically (logkey/atomic.py). An existing file's mode and
    owner are kept; a new one is 0644."""
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    except OSError as exc:
        raise ExportError(f"{path}: {exc.strerror or exc}") from None
    keep_owner = old is not None and os.geteuid() == 0
    try:
        atomic.write_atomic(path, data, mode=(old.st_mode & 0o7777) if old else 0o644,
                            uid=old.st_uid if keep_owner else -1,
                            gid=old.st_gid if keep_owner else -1)
    except OSError as exc:
        raise ExportError(f"{path}: {exc.strerror or exc}") from None


# --- targets ------------------------------------------------------------------------------

class Target:
    """One configured export. sync(keys) brings it to exactly `keys` (sorted gate keys) and
    says whether it changed anything; it raises ExportError."""

    def __init__(self, spec: dict):
        self.format = spec["format"]
        self.path = spec["path"]
        self.command = spec.get("command")
        self.base = spec.get("base")
        self.failing = False            # an error was logged and not yet followed by success
        self.command_failing = False
        self.seen = None                # the kept file's stat after our last sync

    def sync(self, keys: list[str]) -> bool:
        raise NotImplementedError

    def kept_file(self) -> str:
        """The file this export keeps (whose change by another writer is noticed)."""
        return self.path

    def signature(self):
        try:
            st = os.stat(self.kept_file())
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def forget(self) -> None:
        """Another writer (`logkey open`/`close`, `logkey export`) changed the file: what this
        target remembers of it is void; the next sync reads it again."""
        self.seen = None

    def describe(self) -> str:
        return f"{self.format} export {self.path}"


class FileTarget(Target):
    """sendmail, exim, opensmtpd, text: a text file replaced by rename."""

    def __init__(self, spec: dict):
        super().__init__(spec)
        self.last: bytes | None = None  # the content this export is known to hold

    def forget(self) -> None:
        super().forget()
        self.last = None

    def content(self, keys) -> bytes:
        return render(self.format, keys).encode()

    def sync(self, keys) -> bool:
        data = self.content(keys)
        if self.last is None:
            try:
                with open(self.path, "rb") as f:
                    if f.read(len(data) + 1) == data and not self.after_stale():
                        self.last = data
            except OSError:
                pass
        if data == self.last:
            return False
        self.last = None                # until every step below has worked
        write_atomic(self.path, data)
        self.after_write()
        self.last = data
        log.debug("%s: %d line(s) written", self.describe(), data.count(b"\n"))
        return True

    def after_write(self) -> None:
        pass

    def after_stale(self) -> bool:
        """True when the file is current but what is built from it is not."""
        return False


class SendmailTarget(FileTarget):
    """The access text file, then `makemap hash` into PATH.db via a temp map and a rename."""

    def __init__(self, spec):
        super().__init__(spec)
        self.warned_no_makemap = False

    def _makemap(self) -> str | None:
        try:
            return _tool("makemap")
        except ExportError:
            if not self.warned_no_makemap:
                self.warned_no_makemap = True
                log.warning("%s: makemap not found: the access text is written, %s.db is not "
                            "built (install sendmail, or build it from command:)",
                            self.describe(), self.path)
            return None

    def builds_db(self) -> bool:
        """PATH.db is kept only where it exists already: a site whose access database is
        logkey's alone (built once as root: `makemap hash PATH < PATH`). Elsewhere, as with
        the shipped unit (user logkey, whose files sendmail calls unsafe), a root job merges
        the text into the site's database (docs/mta/sendmail.md)."""
        return os.path.exists(self.path + ".db")

    def after_stale(self) -> bool:
        if not self.builds_db():
            return False
        try:
            _tool("makemap")
        except ExportError:
            return False
        try:
            return os.stat(self.path + ".db").st_mtime < os.stat(self.path).st_mtime
        except OSError:
            return True

    def after_write(self) -> None:
        if not self.builds_db():
            return
        makemap = self._makemap()
        if makemap is None:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        tmp = os.path.join(directory, f".{os.path.basename(self.path)}.logkey-new")
        try:
            with open(self.path, "rb") as f:
                source = f.read()
        except OSError as exc:
            raise ExportError(f"{self.path}: {exc.strerror or exc}") from None
        out = run_bounded([makemap, "hash", tmp], input=source, timeout=TOOL_TIMEOUT)
        if out.returncode != 0:
            _unlink(tmp + ".db")
            raise ExportError(f"makemap hash {tmp} failed ({out.returncode}): "
                              f"{_tail(out.stderr)}")
        try:
            os.replace(tmp + ".db", self.path + ".db")
        except OSError as exc:
            _unlink(tmp + ".db")
            raise ExportError(f"{self.path}.db: {exc.strerror or exc}") from None


class TcprulesTarget(Target):
    """Gate rules + base rules compiled by tcprules into the cdb (tcprules renames)."""

    def __init__(self, spec):
        super().__init__(spec)
        self.last: bytes | None = None  # the rules the cdb was last built from (by us)

    def forget(self) -> None:
        super().forget()
        self.last = None

    def rules(self, keys) -> bytes:
        base = ""
        if self.base:
            try:
                with open(self.base, encoding="utf-8", errors="surrogateescape") as f:
                    base = f.read()
            except OSError as exc:
                raise ExportError(f"base rules {self.base}: {exc.strerror or exc}") from None
        return render("tcprules", keys, base).encode("utf-8", "surrogateescape")

    def sync(self, keys) -> bool:
        rules = self.rules(keys)
        if rules == self.last and os.path.exists(self.path):
            return False
        self.last = None
        tcprules = _tool("tcprules")
        out = run_bounded([tcprules, self.path, self.path + ".tmp"], input=rules,
                          timeout=TOOL_TIMEOUT)
        if out.returncode != 0:
            raise ExportError(f"tcprules {self.path} failed ({out.returncode}): "
                              f"{_tail(out.stderr)}")
        self.last = rules
        log.debug("%s: rebuilt", self.describe())
        return True


class LmdbTarget(Target):
    """A Postfix lmdb map kept in sync in place with postmap -i / postmap -d."""

    def __init__(self, spec):
        super().__init__(spec)
        path = self.path
        self.map = path[: -len(".lmdb")] if path.endswith(".lmdb") else path
        self.file = self.map + ".lmdb"
        self.current: set[str] | None = None    # what the map holds, once read

    def kept_file(self) -> str:
        return self.file

    def forget(self) -> None:
        super().forget()
        self.current = None

    def _read(self, postmap: str) -> set[str] | None:
        if not os.path.exists(self.file):
            return None
        out = run_bounded([postmap, "-s", f"lmdb:{self.map}"], timeout=TOOL_TIMEOUT)
        if out.returncode != 0:
            raise ExportError(f"postmap -s lmdb:{self.map} failed ({out.returncode}): "
                              f"{_tail(out.stderr)}")
        keys = set()
        for line in out.stdout.decode(errors="replace").splitlines():
            key = line.split("\t", 1)[0].split(" ", 1)[0]
            if key:
                keys.add(key)
        return keys

    def sync(self, keys) -> bool:
        postmap = _tool("postmap")
        want = lmdb_keys(keys)
        if self.current is None or not os.path.exists(self.file):
            self.current = self._read(postmap)
        current = self.current
        self.current = None             # unknown until both steps below have worked
        add = want - (current or set())
        remove = (current or set()) - want
        if current is not None and not add and not remove:
            self.current = current
            return False
        if add or current is None:      # postmap -i with no input creates an empty map
            data = "".join(f"{k} OK\n" for k in sorted(add)).encode()
            out = run_bounded([postmap, "-i", f"lmdb:{self.map}"], input=data,
                              timeout=TOOL_TIMEOUT)
            if out.returncode != 0:
                raise ExportError(f"postmap -i lmdb:{self.map} failed ({out.returncode}): "
                                  f"{_tail(out.stderr)}")
        if remove:
            data = "".join(f"{k}\n" for k in sorted(remove)).encode()
            out = run_bounded([postmap, "-d", "-", f"lmdb:{self.map}"], input=data,
                              timeout=TOOL_TIMEOUT)
            # exit 1 with nothing said means "none of these keys was there": fine.
            if out.returncode != 0 and (out.returncode != 1 or out.stderr.strip()):
                raise ExportError(f"postmap -d lmdb:{self.map} failed ({out.returncode}): "
                                  f"{_tail(out.stderr)}")
        self.current = want
        log.debug("%s: %d added, %d removed", self.describe(), len(add), len(remove))
        return True


def make_target(spec: dict) -> Target:
    kind = {"lmdb": LmdbTarget, "sendmail": SendmailTarget, "tcprules": TcprulesTarget}.get(
        spec["format"], FileTarget)
    if spec["format"] not in FORMATS:
        raise ValueError(f"unknown export format {spec['format']!r}")
    return kind(spec)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# --- the exporter -------------------------------------------------------------------------

class Exporter:
    """Every configured export, brought to the open gates by update(gates, now)."""

    def __init__(self, exports: list[dict], *, command_timeout: float = COMMAND_TIMEOUT):
        self.targets = [make_target(spec) for spec in exports]
        self.command_timeout = command_timeout
        self.keys: list[str] | None = None      # the keys of the last update

    @property
    def failing(self) -> bool:
        return any(t.failing for t in self.targets)

    def update(self, gates, now: float) -> None:
        """Bring every export to exactly the gates open at `now`. Never raises."""
        self.keys = sorted_keys(g.key for g in gates if g.expires > now)
        for target in self.targets:
            self._sync(target)

    def changed_elsewhere(self) -> bool:
        """True when an export's file was changed by another writer since our last sync."""
        return any(t.seen is not None and t.signature() != t.seen for t in self.targets)

    def forget(self) -> None:
        for target in self.targets:
            target.forget()

    def retry(self) -> None:
        """Try again the exports whose last update failed (with the last update's keys)."""
        if self.keys is None:
            return
        for target in self.targets:
            if target.failing:
                self._sync(target)

    def _sync(self, target: Target) -> None:
        try:
            changed = target.sync(self.keys)
        except ExportError as exc:
            if not target.failing:
                target.failing = True
                log.error("%s: %s (will retry)", target.describe(), exc)
            return
        except Exception as exc:        # noqa: BLE001 — an export never stops the watcher
            if not target.failing:
                target.failing = True
                log.error("%s: internal error: %s: %s (will retry)", target.describe(),
                          type(exc).__name__, exc)
            return
        if target.failing:
            target.failing = False
            log.info("%s: up to date again", target.describe())
        if changed and target.command:
            self._command(target)
        target.seen = target.signature()

    def _command(self, target: Target) -> None:
        try:
            out = run_bounded(["/bin/sh", "-c", target.command], timeout=self.command_timeout)
            problem = None if out.returncode == 0 else \
                f"exit {out.returncode}: {_tail(out.stderr) or _tail(out.stdout)}"
        except ExportError as exc:
            problem = str(exc)
        if problem is not None:
            if not target.command_failing:
                target.command_failing = True
                log.warning("%s: command %r failed: %s", target.describe(), target.command,
                            problem)
        elif target.command_failing:
            target.command_failing = False
            log.info("%s: command %r works again", target.describe(), target.command)


def sync_configured(cfg, store, now: float | None = None) -> bool:
    """Bring every configured export (cfg.exports) to the gates open in `store` now, running
    each changed export's `command:`, as the watcher does: `logkey open`/`close` call this so
    that they take effect in the exports at once, `logkey export` with no --format too.
    Errors are logged (as the watcher logs them); True when every export is up to date."""
    if not cfg.exports:
        return True
    now = time.time() if now is None else now
    exporter = Exporter(cfg.exports)
    exporter.update(list(store.scan(now)), now)
    return not exporter.failing and not any(t.command_failing for t in exporter.targets)


# --- `logkey export` ----------------------------------------------------------------------

def add_parser(sub) -> argparse.ArgumentParser:
    """Register `logkey export` on an argparse subparsers object."""
    p = sub.add_parser(
        "export", help="write one export of the open gates now",
        description="Write the gates open now, from the store, in one export format: to "
                    "--output FILE (atomically; lmdb and tcprules need it), else to stdout. "
                    "A tcprules export takes the base rules of the configured tcprules "
                    "export; when --output is a configured export's path, that export's "
                    "command: runs after the write. With no --format, every configured "
                    "export is brought up to date, as the watcher does.")
    p.add_argument("--format", choices=FORMATS,
                   help="the format (default: every configured export)")
    p.add_argument("--output", metavar="FILE",
                   help="the file (for lmdb: the map name, as in lmdb:FILE; for tcprules: "
                        "the cdb)")
    p.add_argument("--config", metavar="FILE",
                   help="configuration file (default: $LOGKEY_CONFIG, else "
                        "/etc/logkey/config.yaml)")
    p.set_defaults(func=main)
    return p


def main(args) -> int:
    """`logkey export`: 0 written, 2 on any error (one line on stderr)."""
    from .. import config as config_mod
    from ..stores import StoreError, open_store

    if args.format is None and args.output:
        print("logkey: export: --output needs --format", file=sys.stderr)
        return 2
    if args.format in ("lmdb", "tcprules") and not args.output:
        print(f"logkey: export: --format {args.format} needs --output FILE", file=sys.stderr)
        return 2
    try:
        cfg = config_mod.load(args.config)
        now = time.time()
        store = open_store(cfg.store)
        try:
            if args.format is None:
                return 0 if sync_configured(cfg, store, now) else 2
            keys = sorted_keys(g.key for g in store.scan(now) if g.expires > now)
        finally:
            store.close()
        if not args.output:
            sys.stdout.write(render(args.format, keys))
            sys.stdout.flush()
            return 0
        base = next((e["base"] for e in cfg.exports if e["format"] == "tcprules"), None)
        same = next((e for e in cfg.exports if e["format"] == args.format and
                     os.path.abspath(e["path"]) == os.path.abspath(args.output)), None)
        target = make_target({"format": args.format, "path": args.output,
                              "command": same.get("command") if same else None, "base": base})
        target.sync(keys)
        if target.command:
            out = run_bounded(["/bin/sh", "-c", target.command], timeout=COMMAND_TIMEOUT)
            if out.returncode != 0:
                raise ExportError(f"command {target.command!r} failed: exit {out.returncode}: "
                                  f"{_tail(out.stderr) or _tail(out.stdout)}")
        return 0
    except StoreError as exc:
        print(f"logkey: export: store: {exc}", file=sys.stderr)
        return 2
    except LogkeyError as exc:
        print(f"logkey: export: {exc}", file=sys.stderr)
        return 2


def _standalone(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="logkey")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return main(parser.parse_args(["export", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(_standalone())
