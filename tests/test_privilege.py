"""Least privilege (SECURITY.md, "Running logkey"): the shipped systemd units and their
sysusers/tmpfiles snippets checked by systemd's own tools, the gate store's modes, and logkey
really run as an unprivileged account that reads the logs through group adm only.

systemd is not PID 1 here, so the units cannot be started; `systemd-analyze verify` loads them
as systemd would (unknown keys, bad values, a missing executable are reported) and `security
--offline` scores their sandbox. The unprivileged runs use setpriv with a uid that has no
capabilities and no passwd entry, which is what User=logkey with CapabilityBoundingSet= empty
and NoNewPrivileges gives the services."""
import os
import re
import shutil
import socket
import stat
import subprocess
import time

import pytest

from conftest import ROOT, stop_process
from logkey.stores import StoreError
from logkey.stores.base import GateRecord
from logkey.stores.dirstore import DirStore

UNITS = ROOT / "contrib" / "systemd"
INSTALLED = "/usr/local/bin/logkey"          # ExecStart= in the shipped units
UID = 64123                                  # an unprivileged uid with no passwd entry
ADM, DAEMON = 4, 1                           # Debian's adm (reads logs) and daemon groups


def logkey_exe() -> str:
    return os.environ.get("LOGKEY_EXE") or str(ROOT / "bin" / "logkey")


def tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: .ci/run installs Debian's systemd package")
    return path


def units_here(tmp_path) -> list:
    """The shipped units with ExecStart pointing at this checkout's logkey (the only change)."""
    out = []
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text()
        if "ExecStart=/usr/sbin/smtpctl " in text or "makemap" in text:   # root helpers
            continue
        assert f"ExecStart={INSTALLED} " in text, unit
        copy = tmp_path / unit.name
        copy.write_text(text.replace(INSTALLED, logkey_exe()))
        out.append(copy)
    assert [u.name for u in out] == ["logkey-policy.service", "logkey-watch.service"]
    return out


def unit_settings(path) -> dict:
    settings = {}
    for line in path.read_text().splitlines():
        if line and line[0] not in "#[" and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_units_pass_systemd_analyze_verify_without_a_word(tmp_path):
    analyze = tool("systemd-analyze")
    units = units_here(tmp_path)
    proc = subprocess.run([analyze, "verify", *map(str, units)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    broken = tmp_path / "broken.service"                 # the check does look at the settings
    broken.write_text(units[0].read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    proc = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert "Unknown key 'NoNewPrivilege'" in proc.stdout + proc.stderr


def test_units_sandbox(tmp_path):
    analyze = tool("systemd-analyze")
    for unit in units_here(tmp_path):
        s = unit_settings(unit)
        want = {"User": ["logkey"], "Group": ["logkey"], "NoNewPrivileges": ["yes"],
                "ProtectSystem": ["strict"], "ProtectHome": ["yes"], "PrivateTmp": ["yes"],
                "CapabilityBoundingSet": [""], "AmbientCapabilities": [""],
                "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
                "SystemCallFilter": ["@system-service"], "IPAddressDeny": ["any"],
                "RestartPreventExitStatus": ["2"]}
        assert {k: s.get(k) for k in want} == want, unit.name
        if unit.name == "logkey-watch.service":
            assert s["ReadWritePaths"] == ["/var/lib/logkey /run/logkey"]
            assert s["SupplementaryGroups"] == ["adm"]           # reads the logs, nothing more
        else:
            assert s["ReadWritePaths"] == ["/run/logkey"]        # the store: read only
            assert "SupplementaryGroups" not in s
        proc = subprocess.run([analyze, "security", "--offline=yes", str(unit)],
                              capture_output=True, text=True, cwd=tmp_path, timeout=60)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", proc.stdout)
        assert m and float(m.group(1)) <= 2.0 and m.group(2) == "OK", proc.stdout[-2000:]


def test_sysusers_and_tmpfiles_make_the_account_and_directories(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run([tool("systemd-sysusers"), f"--root={root}", str(UNITS / "logkey.sysusers")],
                   check=True, capture_output=True, timeout=60)
    [entry] = [l.split(":") for l in (root / "etc" / "passwd").read_text().splitlines()
               if l.startswith("logkey:")]
    uid, gid, shell = int(entry[2]), int(entry[3]), entry[6]
    assert uid < 1000 and shell == "/usr/sbin/nologin"      # a system account, no login
    subprocess.run([tool("systemd-tmpfiles"), f"--root={root}", "--create",
                    str(UNITS / "logkey.tmpfiles")], check=True, capture_output=True, timeout=60)
    for path, mode in (("var/lib/logkey", 0o755), ("var/lib/logkey/gates", 0o750),
                       ("var/lib/logkey/state", 0o750), ("run/logkey", 0o755)):
        st = os.stat(root / path)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, uid, gid), path


# --- the store's modes ----------------------------------------------------------------------

def test_dir_store_refuses_a_directory_its_group_or_others_may_write(tmp_path):
    for mode, who in ((0o770, "its group"), (0o757, "others")):
        d = tmp_path / f"gates{mode:o}"
        d.mkdir()
        os.chmod(d, mode)
        with pytest.raises(StoreError) as e:
            DirStore(d)
        assert str(e.value) == (f"gate store {d}: directory is writable by {who} "
                                f"(mode 0{mode:o}); only logkey's user may write there")


@pytest.fixture
def world(open_tmp):
    """A temp dir an unprivileged uid can reach."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to run as another uid")
    return open_tmp


def reachable_by_others(path) -> str | None:
    """The first directory above `path` another uid cannot search, or None."""
    path = os.path.realpath(path)
    while path != "/":
        path = os.path.dirname(path)
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return path
    return None


def as_user(*groups):
    """setpriv as UID, in exactly these groups, without capabilities or a way to gain any."""
    return ["setpriv", f"--reuid={UID}", f"--regid={UID}",
            "--groups=" + ",".join(map(str, groups)) if groups else "--clear-groups",
            "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]


def test_gate_records_are_readable_by_the_checkers_group_only(world):
    gates = os.path.join(world, "gates")
    store = DirStore(gates, group=DAEMON)
    store.put(GateRecord("192.0.2.7", "alice", "dovecot", "pop3", time.time(),
                         time.time() + 600, "/var/log/mail.log:1"))
    st = os.stat(os.path.join(gates, "192.0.2.7"))
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, DAEMON)
    probe = ("import os, sys\n"
             "try:\n    print(open(sys.argv[1] + '/192.0.2.7').read().count('alice'))\n"
             "except OSError as e:\n    print(e.strerror)\n"
             "try:\n    open(sys.argv[1] + '/198.51.100.1', 'x')\n    print('created')\n"
             "except OSError as e:\n    print(e.strerror)\n")
    python = shutil.which("python3", path="/usr/bin:/bin")       # not the venv's: reachable
    member = subprocess.run(as_user(DAEMON) + [python, "-c", probe, gates],
                            capture_output=True, text=True, timeout=30)
    assert member.stdout.split("\n")[:2] == ["1", "Permission denied"]   # reads, cannot add
    other = subprocess.run(as_user() + [python, "-c", probe, gates],
                           capture_output=True, text=True, timeout=30)
    assert other.stdout.split("\n")[:2] == ["Permission denied", "Permission denied"]


def _connects(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        return s.connect_ex(path) == 0


def test_watch_and_policy_run_unprivileged_reading_logs_through_adm(world):
    hidden = reachable_by_others(logkey_exe())
    if hidden is not None:
        pytest.skip(f"{hidden} is not searchable by other users, so an unprivileged uid "
                    "cannot run this checkout's logkey")
    w = world
    log = os.path.join(w, "mail.log")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    with open(log, "w") as f:
        f.write(f"{stamp} mail dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
                "rip=192.0.2.7, lip=192.0.2.1, mpid=1, session=<AAAAAAAAAAAAAAAA>\n")
    os.chown(log, 0, ADM)
    os.chmod(log, 0o640)                                  # Debian's mail.log: root:adm 0640
    for sub in ("lib", "run"):
        os.mkdir(os.path.join(w, sub), 0o755)
        os.chown(os.path.join(w, sub), UID, UID)
    cfg = os.path.join(w, "config.yaml")
    with open(cfg, "w") as f:
        f.write(f"logs:\n  - path: {log}\n    sender_verified: true\n"
                f"store: {{type: dir, path: {w}/lib/gates, group: daemon}}\n"
                f"state_dir: {w}/lib/state\n"
                f"policy: {{listen: ['unix:{w}/run/policy.sock'], socket_group: daemon}}\n")
    os.chmod(cfg, 0o644)
    env = {**os.environ, "LOGKEY_CONFIG": cfg}

    # Without adm the log cannot be read: no gate, and the log says why.
    proc = subprocess.run(as_user(DAEMON) + [logkey_exe(), "watch", "--once"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Permission denied" in proc.stderr, proc.stderr
    assert os.listdir(os.path.join(w, "lib", "gates")) == []
    # With adm (and daemon, the checkers' group it hands the gates to): the gate opens.
    proc = subprocess.run(as_user(ADM, DAEMON) + [logkey_exe(), "watch", "--once"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "gate open ip=192.0.2.7 user=alice" in proc.stderr and "<4>" not in proc.stderr
    gate = os.stat(os.path.join(w, "lib", "gates", "192.0.2.7"))
    assert (gate.st_uid, gate.st_gid, stat.S_IMODE(gate.st_mode)) == (UID, DAEMON, 0o640)

    # The policy service, in the checkers' group only, answers from that store.
    sock = os.path.join(w, "run", "policy.sock")
    policy = subprocess.Popen(as_user(DAEMON) + [logkey_exe(), "policy"], env=env,
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        # The socket exists from bind() on, under umask 0177; its group and mode are set
        # just after (unixsock.bind_unix), and it listens last: wait until it answers.
        while not _connects(sock):
            assert policy.poll() is None and time.monotonic() < deadline, policy.stderr.read()
            time.sleep(0.02)
        st = os.stat(sock)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (UID, DAEMON, 0o660)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(sock)
            for ip, action in (("192.0.2.7", b"OK"), ("192.0.2.8", b"DUNNO")):
                s.sendall(b"request=smtpd_access_policy\nclient_address=" + ip.encode()
                          + b"\n\n")
                reply = b""
                while not reply.endswith(b"\n\n"):
                    chunk = s.recv(4096)
                    assert chunk
                    reply += chunk
                assert reply == b"action=" + action + b"\n\n"
    finally:
        stop_process(policy)
        policy.stderr.close()
    assert policy.returncode == 0
