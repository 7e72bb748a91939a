"""The export targets: one class per kind of map an MTA reads, each bringing its file(s) to
exactly the sorted gate keys it is given.

Takes one `exports:` entry (format, path, command, base) and sorted gate keys; gives the
file(s) that MTA reads, up to date, and whether anything changed. When and how often a target
is synced, and its `command:`, are the Exporter's (exporter.py); writing and running tools,
exportio.py's; the text of each map, mapformats.py's.

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

Reads: the tcprules base file, an existing export file (to skip an unchanged first write),
the lmdb map (`postmap -s`, once, to learn what it holds).
Writes: the export file and PATH.db / PATH.lmdb / the cdb beside it.
Trust: keys are validated gate keys (stores/base.check_key), re-parsed with `ipaddress` by
mapformats.py before they are written; `base` comes from the root-owned configuration.
"""
from __future__ import annotations

import logging
import os

from .exportio import (TOOL_TIMEOUT, ExportError, find_tool, output_tail, run_bounded,
                       unlink_quietly, write_atomic)
from .mapformats import FORMATS, lmdb_keys, render

log = logging.getLogger("logkey")


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
            return find_tool("makemap")
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
            find_tool("makemap")
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
            unlink_quietly(tmp + ".db")
            raise ExportError(f"makemap hash {tmp} failed ({out.returncode}): "
                              f"{output_tail(out.stderr)}")
        try:
            os.replace(tmp + ".db", self.path + ".db")
        except OSError as exc:
            unlink_quietly(tmp + ".db")
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
        tcprules = find_tool("tcprules")
        out = run_bounded([tcprules, self.path, self.path + ".tmp"], input=rules,
                          timeout=TOOL_TIMEOUT)
        if out.returncode != 0:
            raise ExportError(f"tcprules {self.path} failed ({out.returncode}): "
                              f"{output_tail(out.stderr)}")
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
                              f"{output_tail(out.stderr)}")
        keys = set()
        for line in out.stdout.decode(errors="replace").splitlines():
            key = line.split("\t", 1)[0].split(" ", 1)[0]
            if key:
                keys.add(key)
        return keys

    def sync(self, keys) -> bool:
        postmap = find_tool("postmap")
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
                                  f"{output_tail(out.stderr)}")
        if remove:
            data = "".join(f"{k}\n" for k in sorted(remove)).encode()
            out = run_bounded([postmap, "-d", "-", f"lmdb:{self.map}"], input=data,
                              timeout=TOOL_TIMEOUT)
            # exit 1 with nothing said means "none of these keys was there": fine.
            if out.returncode != 0 and (out.returncode != 1 or out.stderr.strip()):
                raise ExportError(f"postmap -d lmdb:{self.map} failed ({out.returncode}): "
                                  f"{output_tail(out.stderr)}")
        self.current = want
        log.debug("%s: %d added, %d removed", self.describe(), len(add), len(remove))
        return True


def make_target(spec: dict) -> Target:
    kind = {"lmdb": LmdbTarget, "sendmail": SendmailTarget, "tcprules": TcprulesTarget}.get(
        spec["format"], FileTarget)
    if spec["format"] not in FORMATS:
        raise ValueError(f"unknown export format {spec['format']!r}")
    return kind(spec)
