"""The warnings of `logkey dry-run` and `logkey watch` about who can write a followed log
(logkey/sources/logtrust.py, SECURITY.md "Who writes the logs" and "Forged syslog lines"): one line per
file and problem, on real files with real owners and modes (the suite runs as root)."""
import os
import shutil

import pytest

from conftest import NOW, ROOT, run_logkey
from logkey.sources.logtrust import who_else_writes

CAPTURED = ROOT / "tests" / "fixtures" / "captured"
LOGS = ROOT / "tests" / "logs"
NOBODY = 65534                   # nobody:nogroup, an account anyone's daemon may run as

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown test files")


def warnings(proc) -> list[str]:
    return [line for line in proc.stderr.decode().splitlines() if "warning" in line
            or line.startswith("<4>")]


def copy(src, dst, mode=0o640):
    shutil.copyfile(src, dst)
    os.chmod(dst, mode)
    return dst


@pytest.fixture
def logdir(tmp_path):
    d = tmp_path / "log"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    return d


# --- who can write ------------------------------------------------------------------------------

@needs_root
def test_who_else_writes_by_mode_owner_and_group(logdir):
    f = copy(LOGS / "mail.log", logdir / "mail.log", 0o640)
    assert who_else_writes(os.stat(f)) is None                          # root, 0640
    os.chmod(f, 0o660)
    assert who_else_writes(os.stat(f)) is None                          # group root
    os.chown(f, 0, 4)                                                   # adm: no ordinary member
    assert who_else_writes(os.stat(f)) is None
    os.chown(f, 0, NOBODY)                                              # nogroup: nobody's group
    assert who_else_writes(os.stat(f)) == "writable by group nogroup, which has the member nobody"
    os.chown(f, 0, 0)
    os.chmod(f, 0o642)
    assert who_else_writes(os.stat(f)) == "writable by every user"
    os.chmod(f, 0o640)
    os.chown(f, NOBODY, 0)
    assert who_else_writes(os.stat(f)) == "owned by nobody (uid 65534)"
    os.chown(f, 104, 4)                                                 # a system account
    assert who_else_writes(os.stat(f)) is None


@needs_root
def test_dry_run_warns_once_per_file_that_others_can_write(logdir):
    good = copy(LOGS / "mail.log", logdir / "good.log")
    shared = copy(LOGS / "mail.log", logdir / "shared.log", 0o646)
    owned = copy(LOGS / "mail.log", logdir / "owned.log")
    os.chown(owned, NOBODY, NOBODY)
    proc = run_logkey("dry-run", "--now", NOW, "--pack", "dovecot", str(good), str(shared),
                      str(owned), check=0)
    writable = [w for w in warnings(proc) if "whoever can write" in w]
    assert writable == [
        f"logkey: warning: {shared}: writable by every user: whoever can write this log can "
        "open gates; see SECURITY.md (Who writes the logs)",
        f"logkey: warning: {owned}: owned by nobody (uid 65534): whoever can write this log can "
        "open gates; see SECURITY.md (Who writes the logs)"]
    os.chmod(logdir, 0o777)                                             # anyone may replace it
    proc = run_logkey("dry-run", "--now", NOW, "--pack", "dovecot", str(good), check=0)
    assert [w for w in warnings(proc) if "whoever can write" in w] == [
        f"logkey: warning: {good}: its directory {logdir} is writable by every user: whoever "
        "can write this log can open gates; see SECURITY.md (Who writes the logs)"]


# --- forgeable syslog lines -----------------------------------------------------------------------

FORGED = ("logkey: warning: {path}: {pack} logins are read from syslog lines, whose program tag "
          "any local user can choose (logger -t); follow the daemon's own log file, or a file "
          "the log daemon filters by sender, and set sender_verified; see SECURITY.md (Forged "
          "syslog lines)")


def test_dry_run_warns_once_when_logins_come_from_syslog_lines(logdir):
    mail = copy(LOGS / "mail.log", logdir / "mail.log")                 # several dovecot logins
    popa3d = copy(LOGS / "popa3d-syslog.log", logdir / "popa3d.log")
    multilog = copy(LOGS / "tcpserver-multilog.log", logdir / "current")
    proc = run_logkey("dry-run", "--now", NOW, str(mail), str(multilog), str(popa3d), check=0)
    assert warnings(proc) == [FORGED.format(path=mail, pack="dovecot"),
                              FORGED.format(path=popa3d, pack="popa3d")]   # not the multilog file
    assert b"Events: " in proc.stdout                                  # the report is unchanged


def test_no_forgery_warning_for_a_daemons_own_file(logdir):
    own = copy(CAPTURED / "dovecot-2.3-logpath.log", logdir / "dovecot.log")    # log_path file
    iso = copy(CAPTURED / "dovecot-2.3-logpath-iso.log", logdir / "dovecot-iso.log")
    proc = run_logkey("dry-run", "--now", NOW, "--json", str(own), str(iso), check=0)
    assert b'"event": "login"' in proc.stdout and warnings(proc) == []


def test_sender_verified_and_own_file_silence_the_forgery_warning(logdir, tmp_path):
    mail = copy(LOGS / "mail.log", logdir / "mail.log")
    other = copy(LOGS / "mail.log", logdir / "other.log")
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"logs:\n  - path: {logdir}/mail*.log\n    sender_verified: true\n"
                   f"  - path: {other}\n")
    proc = run_logkey("dry-run", "--config", str(cfg), "--now", NOW, str(mail), str(other),
                      check=0)
    assert warnings(proc) == [FORGED.format(path=other, pack="dovecot")]
    cfg.write_text(f"logs:\n  - path: {logdir}/mail*.log\n    sender_verified: maybe\n")
    proc = run_logkey("dry-run", "--config", str(cfg), str(mail))
    assert proc.returncode == 2 and proc.stderr.decode() == \
        f"logkey: {cfg}: logs[0].sender_verified: must be true or false\n"


def test_watch_warns_once_in_its_own_log(tmp_path, logdir):
    mail = copy(LOGS / "mail.log", logdir / "mail.log", 0o666)
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"logs: [{mail}]\nstore: {{type: dir, path: {tmp_path}/gates}}\n"
                   f"state_dir: {tmp_path}/state\n")
    proc = run_logkey("watch", "--config", str(cfg), "--once", "--as-of", NOW, check=0)
    assert [w for w in proc.stderr.decode().splitlines() if w.startswith("<4>")] == [
        f"<4>{mail}: writable by every user: whoever can write this log can open gates; see "
        "SECURITY.md (Who writes the logs)",
        "<4>" + FORGED.format(path=mail, pack="dovecot")[len("logkey: warning: "):]]
    assert proc.stderr.decode().count("gate open ") >= 2               # several logins, one warning
