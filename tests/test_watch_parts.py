"""The watcher's parts, each alone (logkey/daemon/: build.py, reading.py, feeding.py,
applying.py, reconciling.py, reload.py), on real files, a real follower, a real unix socket and
a real dir store in tmp; the whole watcher as a process is tests/test_watch.py's."""
import logging
import os
import socket
import time

import pytest

from logkey import config as config_mod
from logkey.daemon.applying import Applier
from logkey.daemon.build import (Engines, WatchError, build, make_exporter, make_follower,
                                 make_journal_readers)
from logkey.daemon.feeding import Feeder
from logkey.daemon.reading import Sources
from logkey.daemon.reconciling import PURGE_EVERY, RECONCILE_EVERY, Reconciler
from logkey.daemon.reload import reload, reload_from
from logkey.daemon.watch import Watcher
from logkey.gates.policy import GatePolicy
from logkey.stores.base import GateRecord
from logkey.stores.dirstore import DirStore

LOGIN = ("{stamp} mail dovecot: pop3-login: Login: user=<{user}>, method=PLAIN, rip={ip}, "
         "lip=192.0.2.1, mpid=1, session=<s{ip}>\n")


def login(ip, user="alice", t=None):
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() if t is None else t))
    return LOGIN.format(stamp=stamp, user=user, ip=ip)


def load(tmp_path, extra="", logs=("mail.log",)):
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text("logs:\n" + "".join(f"  - path: {tmp_path}/{name}\n" for name in logs)
                   + f"store: {{type: dir, path: {tmp_path}/gates}}\n"
                   f"state_dir: {tmp_path}/state\nwindow: 10m\n" + extra)
    return config_mod.load(str(cfg))


def append(path, text):
    with open(path, "a") as f:
        f.write(text)


def sources_for(cfg, engines):
    sources = Sources()
    now = time.time
    sources.attach(make_follower(cfg, engines.line_time, now),
                   make_journal_readers(cfg, engines.journals, now))
    return sources


def gate(key, now, expires_in=600.0):
    return GateRecord(key, "alice", "dovecot", "pop3", now - 10, now + expires_in, "t:1")


# --- build.py ------------------------------------------------------------------------------
def test_build_checks_the_packs_a_log_names(tmp_path):
    cfg = load(tmp_path, logs=())
    packs, pconf = build(cfg)
    assert "dovecot" in packs.packs and pconf.window == cfg.window
    bad = load(tmp_path, "logs:\n  - {path: %s/mail.log, packs: [no-such-pack]}\n" % tmp_path)
    with pytest.raises(WatchError, match=r"logs\[0\]\.packs: no pack named 'no-such-pack'"):
        build(bad)


def test_engines_pick_the_entry_by_glob_and_keep_their_counts_across_a_rebuild(tmp_path):
    cfg = load(tmp_path, "logs:\n  - {path: '%s/dovecot*.log', packs: [dovecot]}\n" % tmp_path)
    packs, _ = build(cfg)
    engines = Engines(cfg, packs)
    engine, own = engines.for_path(f"{tmp_path}/dovecot-1.log")
    assert engine is engines.files[0][1] and own is None
    assert engines.for_path(f"{tmp_path}/other.log") == (engines.base, None)
    engines.base.stats.lines = 7
    again = Engines(cfg, packs, previous=engines)
    assert again.base.stats.lines == 7 and again.base is not engines.base
    assert engines.line_time(login("192.0.2.9", t=1_800_000_000).encode()) == 1_800_000_000
    assert engines.line_time(b"no header here") is None


def test_make_follower_makes_state_dir_or_says_why_not_in_one_line(tmp_path):
    cfg = load(tmp_path)
    follower = make_follower(cfg, lambda line: None, time.time)
    follower.close()
    assert os.path.isdir(tmp_path / "state")
    (tmp_path / "file").write_text("")
    cfg = load(tmp_path, f"state_dir: {tmp_path}/file/state\n")
    with pytest.raises(WatchError, match=r"^state_dir: .*/file/state: "):
        make_follower(cfg, lambda line: None, time.time)


def test_make_exporter_only_with_exports_and_never_in_observe(tmp_path):
    assert make_exporter(load(tmp_path), observe=False) is None
    cfg = load(tmp_path, f"exports:\n  - {{format: text, path: {tmp_path}/a.txt}}\n")
    assert make_exporter(cfg, observe=True) is None
    assert [t.path for t in make_exporter(cfg, observe=False).targets] == [f"{tmp_path}/a.txt"]


# --- reading.py ----------------------------------------------------------------------------
def test_sources_read_new_lines_count_them_and_commit_their_offsets(tmp_path):
    cfg = load(tmp_path)
    (tmp_path / "mail.log").write_text("")
    engines = Engines(cfg, build(cfg)[0])
    sources = sources_for(cfg, engines)
    try:
        assert sources.lines() == []
        append(tmp_path / "mail.log", "one\ntwo\n")
        got = sources.lines()
        assert [(line.lineno, line.data) for line in got] == [(1, b"one"), (2, b"two")]
        assert sources.lines_read == {f"{tmp_path}/mail.log": 2}
        sources.commit()
    finally:
        sources.close()
    again = sources_for(cfg, engines)           # a restart starts after what was committed
    try:
        append(tmp_path / "mail.log", "three\n")
        assert [line.data for line in again.lines()] == [b"three"]
    finally:
        again.close()


def test_sources_take_popwrap_datagrams_and_count_bad_ones(tmp_path):
    path = tmp_path / "popwrap.sock"
    cfg = load(tmp_path, f"popwrap: {{socket: {path}}}\n")
    sources = Sources()
    sources.bind(cfg)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"login 192.0.2.7 alice pop3\n", str(path))
            s.sendto(b"not a datagram of popwrap", str(path))
        got = list(sources.datagrams(time.time()))
        assert [(e and (e.kind, e.ip, e.user), where) for e, where in got] == [
            (("login", "192.0.2.7", "alice"), "popwrap"), (None, "popwrap")]
        assert sources.datagrams_read == 2
    finally:
        sources.close()


def test_a_start_that_cannot_bind_its_sockets_leaves_nothing_open(tmp_path):
    """The follower (its files and inotify) is attached before the sockets are bound: a bind
    that fails (the dovecot_policy port taken) closes it again with the popwrap socket."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "mail.log").write_text(login("192.0.2.8"))
        key = tmp_path / "policy.key"
        key.write_text("k" * 32 + "\n")
        key.chmod(0o400)
        cfg = load(tmp_path, f"popwrap: {{socket: {tmp_path / 'popwrap.sock'}}}\n"
                   f"dovecot_policy: {{listen: '127.0.0.1:{port}', api_key_file: {key}}}\n")
        before = sorted(os.listdir("/proc/self/fd"))
        with pytest.raises(WatchError, match="dovecot_policy"):
            Watcher(cfg)
        assert sorted(os.listdir("/proc/self/fd")) == before


# --- feeding.py ----------------------------------------------------------------------------
def test_feeder_gives_each_login_with_its_source_and_notes_the_last_event(tmp_path, caplog):
    cfg = load(tmp_path)
    (tmp_path / "mail.log").write_text("")
    engines = Engines(cfg, build(cfg)[0])
    feeder = Feeder(shift=3600.0)
    feeder.install(cfg, engines)
    sources = sources_for(cfg, engines)
    t = time.time() - 3600.0
    try:
        assert sources.lines() == []            # attached (a first attach seeks by time)
        append(tmp_path / "mail.log", "a line of no program\n" + login("192.0.2.7", t=t))
        with caplog.at_level(logging.WARNING, logger="logkey"):
            got = list(feeder.lines(sources.lines(), time.time()))
    finally:
        sources.close()
    assert [(e.kind, e.ip, where) for e, where in got] == [
        ("login", "192.0.2.7", f"{tmp_path}/mail.log:2")]
    assert abs(got[0][0].time.timestamp() - (int(t) + 3600)) < 1     # --as-of's shift
    assert feeder.last_events["dovecot"]["kind"] == "login"
    assert engines.base.stats.lines == 2
    assert "syslog lines" in caplog.text        # logins from a forgeable syslog line: warned


def test_feeder_counts_datagram_events_and_skips_bad_ones(tmp_path):
    cfg = load(tmp_path, logs=())
    engines = Engines(cfg, build(cfg)[0])
    feeder = Feeder()
    feeder.install(cfg, engines)
    from logkey.sources.popsocket import popwrap_event
    event = popwrap_event(b"login 192.0.2.7 alice pop3", time.time())
    got = list(feeder.datagrams([(None, "popwrap"), (event, "popwrap")]))
    assert got == [(event, "popwrap")]
    assert engines.base.stats.events[("popwrap", "login")] == 1
    assert feeder.last_events["popwrap"]["kind"] == "login"


# --- applying.py ---------------------------------------------------------------------------
def applier_for(tmp_path, cfg):
    store = DirStore(str(tmp_path / "gates"))
    policy = GatePolicy(build(cfg)[1])
    return Applier(store, policy), policy, store


def test_applier_writes_the_decisions_and_commits_offsets_only_when_all_are_stored(tmp_path,
                                                                                   caplog):
    cfg = load(tmp_path)
    (tmp_path / "mail.log").write_text("")
    applier, policy, store = applier_for(tmp_path, cfg)
    engines = Engines(cfg, build(cfg)[0])
    feeder = Feeder()
    feeder.install(cfg, engines)
    sources = sources_for(cfg, engines)
    try:
        sources.lines()
        append(tmp_path / "mail.log", login("192.0.2.7"))
        now = time.time()
        with caplog.at_level(logging.INFO, logger="logkey"):
            for event, where in feeder.lines(sources.lines(), now):
                applier.apply(policy.on_event(event, now, where))
        assert "gate open ip=192.0.2.7 user=alice" in caplog.text
        assert list(applier.pending) == ["192.0.2.7"] and not store.is_open("192.0.2.7")
        assert not applier.commit_read(sources)             # a gate not stored yet: no offsets
        assert os.listdir(tmp_path / "state") == []
        applier.flush(now)
        assert store.is_open("192.0.2.7") and not applier.pending and applier.gates_changed
        assert applier.commit_read(sources) and os.listdir(tmp_path / "state")
    finally:
        sources.close()


def test_applier_keeps_gates_through_a_store_outage_and_writes_them_back(tmp_path, caplog):
    cfg = load(tmp_path)
    applier, policy, store = applier_for(tmp_path, cfg)
    now = time.time()
    applier.apply([])
    policy.adopt([gate("192.0.2.7", now)], now)
    applier.write_back(now)
    os.rmdir(tmp_path / "gates")
    (tmp_path / "gates").write_text("")                     # the store breaks under it
    with caplog.at_level(logging.INFO, logger="logkey"):
        applier.flush(now)
        assert applier.outage_since is not None and applier.store_errors == 1
        assert list(applier.pending) == ["192.0.2.7"] and not applier.store_up
        os.unlink(tmp_path / "gates")
        os.mkdir(tmp_path / "gates", 0o755)
        applier.flush(now)                                  # retry not due yet
        assert applier.pending
        applier.flush(applier.next_retry)
    assert store.is_open("192.0.2.7") and not applier.pending and applier.store_up
    assert applier.store_retries == 1
    assert caplog.text.count("store unavailable, will retry") == 1
    assert "store reachable again" in caplog.text


# --- reconciling.py ------------------------------------------------------------------------
def test_reconciler_exports_the_open_gates_and_drops_one_closed_by_hand(tmp_path):
    cfg = load(tmp_path, f"exports:\n  - {{format: text, path: {tmp_path}/a.txt}}\n")
    applier, policy, store = applier_for(tmp_path, cfg)
    reconciler = Reconciler(applier, policy)
    reconciler.install(make_exporter(cfg, observe=False))
    now = time.time()
    store.put(gate("192.0.2.7", now))
    store.put(gate("192.0.2.8", now))
    assert reconciler.reconcile(now, can_check=True)        # the first tick checks everything
    reconciler.export(now)
    assert (tmp_path / "a.txt").read_text() == "192.0.2.7\n192.0.2.8\n"  # adopted from store
    store.delete("192.0.2.7")                                # logkey close, from outside
    assert not reconciler.reconcile(now + 1, can_check=True)        # not due yet
    later = now + RECONCILE_EVERY + 0.1
    check_all = reconciler.reconcile(later, can_check=True)
    assert check_all
    applier.apply(policy.on_tick(later, applier.still_stored, check_all))
    reconciler.export(later)
    assert (tmp_path / "a.txt").read_text() == "192.0.2.8\n"


def test_reconciler_purges_expired_gates_once_a_period(tmp_path):
    cfg = load(tmp_path)
    applier, policy, store = applier_for(tmp_path, cfg)
    reconciler = Reconciler(applier, policy)
    now = time.time()
    store.put(gate("192.0.2.7", now, expires_in=-5))
    reconciler.purge(now)
    assert os.listdir(tmp_path / "gates") == []
    store.put(gate("192.0.2.8", now, expires_in=-5))
    reconciler.purge(now + 1)                               # next purge in PURGE_EVERY
    assert os.listdir(tmp_path / "gates") != []
    reconciler.purge(now + PURGE_EVERY)
    assert os.listdir(tmp_path / "gates") == []


# --- reload.py -----------------------------------------------------------------------------
def test_reload_refuses_a_bad_pack_name_or_file_and_keeps_serving(tmp_path, caplog):
    cfg = load(tmp_path)
    (tmp_path / "mail.log").write_text("")
    w = Watcher(cfg)
    try:
        bad = load(tmp_path, "logs:\n  - {path: %s/mail.log, packs: [nope]}\n" % tmp_path)
        with caplog.at_level(logging.ERROR, logger="logkey"):
            assert not reload(w, bad)
            assert not reload_from(w, lambda: config_mod.load(str(tmp_path / "missing.yaml")))
        assert caplog.text.count("reload refused, keeping the running configuration") == 2
        assert w.cfg is cfg
        append(tmp_path / "mail.log", login("192.0.2.7"))
        w.step()
        assert DirStore(str(tmp_path / "gates")).is_open("192.0.2.7")
    finally:
        w.close()


def test_reload_with_another_log_follows_it(tmp_path):
    cfg = load(tmp_path)
    (tmp_path / "mail.log").write_text("")
    (tmp_path / "other.log").write_text("")
    w = Watcher(cfg)
    try:
        assert reload(w, load(tmp_path, logs=("mail.log", "other.log")))
        append(tmp_path / "other.log", login("192.0.2.8"))
        assert w.step() == 1
        assert DirStore(str(tmp_path / "gates")).is_open("192.0.2.8")
    finally:
        w.close()


def test_a_reload_during_a_store_outage_keeps_the_offsets_before_the_pending_login(tmp_path):
    """The offsets are saved only once every gate the lines opened is stored, a reload that
    attaches the logs again included: else a crash before the store is back loses the login."""
    cfg = load(tmp_path)
    (tmp_path / "mail.log").write_text("")
    (tmp_path / "other.log").write_text("")
    w = Watcher(cfg)
    try:
        w.step()                                            # attached, offsets saved
        os.rmdir(tmp_path / "gates")
        (tmp_path / "gates").write_text("")                 # the store breaks
        append(tmp_path / "mail.log", login("192.0.2.7"))
        w.step()
        assert w.applier.pending and w.applier.outage_since is not None
        assert reload(w, load(tmp_path, logs=("mail.log", "other.log")))
    finally:
        w.close()                                           # as a crash: nothing more saved
    os.unlink(tmp_path / "gates")
    again = Watcher(cfg)
    try:
        again.step()
        assert DirStore(str(tmp_path / "gates")).is_open("192.0.2.7")
    finally:
        again.close()


class CountedDirStore(DirStore):
    """A real dir store that counts its closes."""
    closed = 0

    def close(self):
        self.closed += 1
        super().close()


def test_a_watcher_that_cannot_start_closes_its_store(tmp_path):
    store = CountedDirStore(str(tmp_path / "gates"))
    bad = load(tmp_path, "logs:\n  - {path: %s/mail.log, packs: [nope]}\n" % tmp_path)
    with pytest.raises(WatchError, match="no pack named 'nope'"):
        Watcher(bad, store=store)
    assert store.closed == 1
    (tmp_path / "file").write_text("")
    with pytest.raises(WatchError, match="^state_dir: "):
        Watcher(load(tmp_path, f"state_dir: {tmp_path}/file/state\n"), store=store)
    assert store.closed == 2
