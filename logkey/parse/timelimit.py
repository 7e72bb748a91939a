"""The time limit on rule matches, kept by a CPU-time timer instead of regex's own clock.

regex's `timeout` reads the process CPU clock (clock(): a system call, not in the vDSO; ~0.8 us
on a virtual machine) when a match starts and every 256 steps of it: a dovecot login's match
costs ~4 us with the limit against ~1.5 us without (issue 17). regex also calls
PyErr_CheckSignals every 256 steps, limit or not, so a signal handler can stop a match.

`cpu_limit()` arms ITIMER_PROF, which counts the process's CPU time as clock() does, to tick
every TICK seconds while it is in force, and has match.py pass no timeout to regex. At a
tick, the handler looks at the Python frame being run: a match in progress is a call of one of
Dispatch's matching methods, told from the next call by its `ticket` local (a counter), or,
in bulk reading, a call of FastPath.match while its C part runs a match (its ticket is the C
part's counter, fastpath.running_ticket). When
the same ticket is seen at LIMIT / TICK ticks in a row, that match has run for at least
match.MATCH_TIMEOUT seconds of CPU, and the handler raises TimeoutError, which regex passes on
from the match, as it does its own timeout: the line gives no event and is counted.

Only in the main thread (the one Python runs signal handlers in) and only when SIGPROF is
free (no profiler holds it and no timer runs): elsewhere the limit stays regex's own, with
the same value. While it is in force no other thread may match (none does: the watcher and
dry-run match on their main thread; the policy service's threads never match). A child forked
inside it (a dry-run worker) calls forked_child(): fork does not pass the timer on. An idle
process is never woken: ITIMER_PROF ticks only while it uses CPU.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from . import fastpath, match

TICK = 0.01               # seconds of CPU between checks; a match is stopped within 1 tick
_WATCHED = frozenset({match.Dispatch.match_or_ignored.__code__,
                      match.Dispatch.ignored.__code__})
# The frame that calls the C matcher of bulk reading (fastpath.py): no Python frame of its own
# runs a match, so the ticket is the C part's, asked of it (None between matches).
_WATCHED_C = fastpath.FastPath.match.__code__
_c_ticket = fastpath.running_ticket


class _Watch:
    """The handler's state: the ticket seen at the last tick, and for how many ticks."""
    __slots__ = ("ticket", "ticks", "needed", "depth")

    def __init__(self):
        self.ticket, self.ticks, self.needed, self.depth = None, 0, 0, 0


_watch = _Watch()


def _on_tick(signum, frame) -> None:
    watch = _watch
    ticket = None
    if frame is not None:
        code = frame.f_code
        if code in _WATCHED:
            ticket = frame.f_locals.get("ticket")
        elif code is _WATCHED_C:
            ticket = _c_ticket()
    if ticket is None or ticket != watch.ticket:
        watch.ticket, watch.ticks = ticket, 0       # a new match (or none) since the last tick
        return
    watch.ticks += 1                                 # the same match, TICK more seconds of CPU
    if watch.ticks >= watch.needed:
        watch.ticket, watch.ticks = None, 0
        raise TimeoutError("rule match time limit")


def _can_arm() -> bool:
    return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGPROF) in (signal.SIG_DFL, signal.SIG_IGN)
            and signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0))


@contextmanager
def cpu_limit():
    """Keep match.MATCH_TIMEOUT by the timer while in the block (see above); nested or where it
    cannot be armed, nothing changes (regex's own limit stays)."""
    watch = _watch
    if watch.depth or not match.MATCH_TIMEOUT or not _can_arm():
        watch.depth += bool(watch.depth)            # (counted only inside an armed block)
        try:
            yield
        finally:
            watch.depth -= bool(watch.depth)
        return
    signal.signal(signal.SIGPROF, _on_tick)
    watch.ticket, watch.ticks, watch.depth = None, 0, 1
    # A match whose ticket is seen at k + 1 ticks in a row has run for at least k * TICK.
    watch.needed = max(1, round(match.MATCH_TIMEOUT / TICK))
    limit = match.regex_timeout
    match.regex_timeout = None
    signal.setitimer(signal.ITIMER_PROF, TICK, TICK)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)   # no tick after this returns
        match.regex_timeout = limit
        watch.depth = 0
        # Not back to SIG_DFL, whose action is to end the process: a tick the kernel sent
        # before the timer stopped may reach us after this (valgrind, which delivers signals
        # late, was killed so at the end of a dry-run). Ignored, it is harmless; _can_arm
        # accepts SIG_IGN, so the limit can be armed again.
        signal.signal(signal.SIGPROF, signal.SIG_IGN)


def forked_child() -> None:
    """In a process forked inside cpu_limit() (a dry-run worker, which lives in it): the timer
    again, which fork does not pass on (the handler and match.regex_timeout it does)."""
    if _watch.depth:
        signal.setitimer(signal.ITIMER_PROF, TICK, TICK)
