"""What the watcher reads: new lines of the followed files, new entries of the journal, and
the datagrams of popwrap and Dovecot's auth policy requests.

Takes: the follower and the journal readers (build.py makes them), the `popwrap` and
`dovecot_policy` settings.
Gives: each step's lines (sources/follow.py's Line, counted per file in `lines_read`), per
journal reader the entries its trusted fields let through (sources/journal.py's `accepted`;
the refused ones counted in the reader's JournalStats and logged by a RefusalLog), and the
sockets' events (sources/popsocket.py, sources/authpolicyserver.py) with the source their
audit line names. `commit` saves the read offsets and journal cursors: the caller calls it
only once every gate those lines opened is in the store (applying.py).
Trust: a journal entry reaches the packs only when its trusted fields match what its pack
expects; the sockets are bound as their settings say (unixsock.py), so only who may write
there reaches the watcher.
"""
from __future__ import annotations

import logging
from collections import Counter

from ..sources import journal
from ..sources.authpolicyserver import AuthPolicyListener, PolicyListenError
from ..sources.popsocket import POPWRAP_PACK, PopwrapListener
from ..unixsock import SocketSetupError
from .build import WatchError

log = logging.getLogger("logkey")


class Sources:
    """The watcher's inputs. `attach` gives it the follower and journal readers (again after a
    reload that changed the logs); `bind` opens the two sockets at start, `rebind` on reload."""

    def __init__(self):
        self.lines_read: Counter = Counter()    # lines read per followed file since start
        self.entries_read = 0                   # journal entries read since start
        self.datagrams_read = 0                 # datagrams received since start
        self.follower = None
        self.readers: list = []
        self.journal_stats: list = []
        self.refusals = None
        self.popwrap = PopwrapListener()
        self.authpolicy = AuthPolicyListener()

    def attach(self, follower, readers: list) -> None:
        self.follower, self.readers = follower, readers
        self.journal_stats = [journal.JournalStats() for _ in readers]
        self.refusals = journal.RefusalLog(log)

    def bind(self, cfg) -> None:
        """The sockets of `popwrap` and `dovecot_policy`; WatchError when one cannot be."""
        try:
            self.popwrap.bind(cfg.popwrap)
        except SocketSetupError as exc:
            raise WatchError(str(exc)) from None
        try:
            self.authpolicy.bind(cfg.dovecot_policy)
        except PolicyListenError as exc:
            self.popwrap.close()
            raise WatchError(f"{cfg.path}: {exc}") from None

    def rebind(self, cfg) -> None:
        """The sockets of a reloaded configuration; one that cannot be is logged, not fatal."""
        if self.popwrap.settings != cfg.popwrap:
            try:
                self.popwrap.bind(cfg.popwrap)
            except SocketSetupError as exc:
                log.error("%s", exc)
        try:
            self.authpolicy.update(cfg.dovecot_policy)
        except PolicyListenError as exc:
            log.error("%s", exc)

    def lines(self) -> list:
        """Every complete new line of the followed files (follow.py's Line)."""
        lines = self.follower.read()
        for line in lines:
            self.lines_read[line.path] += 1
        return lines

    def journal_batches(self, line_max: int):
        """Per journal reader, in order, what it read now: (its index, its label, how many
        entries it read, an iterator of the accepted ones: (where, header, cursor))."""
        for i, (reader, stats) in enumerate(zip(self.readers, self.journal_stats)):
            got = reader.read()
            self.entries_read += len(got)
            yield i, reader.label, len(got), journal.accepted(
                got, reader.exps, stats, reader.label, line_max, self.refusals.refused)

    def datagrams(self, now: float):
        """(event, source) of each datagram waiting: popwrap's (event None for a bad one),
        then the auth policy's."""
        for event in self.popwrap.receive(now):
            self.datagrams_read += 1
            yield event, POPWRAP_PACK
        for event in self.authpolicy.receive(now):
            self.datagrams_read += 1
            yield event, event.pack

    def stop_at_end(self) -> None:
        """Read the journal to its end, then stop (watch --once)."""
        for reader in self.readers:
            reader.follow = False

    def wait(self, timeout: float) -> None:
        """Until a followed file changes, a socket or journalctl has something, or timeout."""
        self.follower.wait(timeout, [fd for fd in [
            self.popwrap.fileno(), self.authpolicy.fileno()] + [
            r.fileno() for r in self.readers] if fd is not None])

    def commit(self) -> None:
        """Save the offsets and journal cursors of everything read."""
        self.follower.commit()
        for reader in self.readers:
            try:
                reader.commit()
            except OSError as exc:
                log.warning("%s: cursor not saved: %s", reader.label, exc)

    def close_files(self) -> None:
        """Close the follower and the journal readers (each says what it read)."""
        self.follower.close()
        for reader, stats in zip(self.readers, self.journal_stats):
            reader.close()
            log.info("%s: %s", reader.label, stats.line())

    def close(self) -> None:
        self.popwrap.close()
        self.authpolicy.close()
        if self.follower is not None:
            self.close_files()
