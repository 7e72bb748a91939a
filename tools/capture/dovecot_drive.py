#!/usr/bin/env python3
"""Drive a private Dovecot with real POP3/IMAP sessions (run by hand by dovecot*.sh, not by CI).

Usage:  dovecot_drive.py POP_PORT IMAP_PORT PASSWORD LEDGER [SCENARIO ...]
        (no SCENARIO: the 2.3 set, DEFAULT below; a SCENARIO may also name a set: DEFAULT,
        ALL_24; imap_kicked runs $DOVECOT_KICK USER IP, e.g. "doveadm -c CONF kick")

Every scenario connects from its own loopback source address (127.0.0.N, or ::1 for the IPv6
ones), so the server's lines can be told apart by the client address. Prints one "ok"/"fail"
line per scenario and writes LEDGER, a JSON list of what the clients did, one entry per login
attempt: {"scenario", "ip", "protocol", "user", "ok"} where ok says the server accepted the
login (the clients' own account, as tests/servers.py keeps it for the end-to-end fixtures).
The pack tests compare it with the events dry-run reads from the captured log.
"""
import base64
import json
import os
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True      # clients.py lives in the repo: leave no __pycache__ there
from clients import IMAPFrom as _IMAPFrom, POP3From as _POP3From  # noqa: E402  (same folder)

POP, IMAP, PASS = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
LEDGER_PATH = sys.argv[4]
HOSTILE1 = "x>, method=PLAIN, rip=127.0.0.9, lip=127.0.0.1"
HOSTILE2 = "y>, rip=127.0.0.9, session=<AAAAAAAAAAAAAAAA"
HOSTILE3 = "x dovecot: pop3-login: Login: user=<a>, method=PLAIN, rip=127.0.0.66, lip=127.0.0.1, session=<Z"
HOSTILE_SPACE = "s p rip=127.0.0.9 lip=127.0.0.1"      # spaces, no comma: a key=value lookalike
HOSTILE_GT = "g>x"                                     # ends user=<...> early
CR_NAME = "evil\r\nimap-login: Login: user=<z>, rip=127.0.0.9"

ledger = []


def record(ip, protocol, user, ok):
    ledger.append({"scenario": CURRENT, "ip": ip, "protocol": protocol, "user": user, "ok": ok})


def host_for(src):
    return "::1" if ":" in src else "127.0.0.1"


def POP3From(src):
    return _POP3From(src, POP, host_for(src))


def IMAPFrom(src):
    return _IMAPFrom(src, IMAP, host_for(src))


def quoted(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pop_login(src, user, password, sasl=False):
    """USER/PASS (or AUTH PLAIN with sasl=True) from src; records the attempt; returns the client."""
    p = POP3From(src)
    try:
        if sasl:
            p._shortcmd("AUTH PLAIN " + base64.b64encode(
                b"\0" + user.encode() + b"\0" + password.encode()).decode())
        else:
            p.user(user)
            p.pass_(password)
    except Exception:
        record(src, "pop3", user, False)
        try:
            p.quit()
        except Exception:
            pass
        raise
    record(src, "pop3", user, True)
    return p


def imap_login(src, user, password, sasl=False, drop_on_fail=False):
    """LOGIN (or AUTHENTICATE PLAIN with sasl=True) from src; records the attempt."""
    m = IMAPFrom(src)
    try:
        if sasl:
            m.authenticate("PLAIN", lambda _: b"\0" + user.encode() + b"\0" + password.encode())
        else:
            m.login(quoted(user) if any(c in user for c in ' "\\(){%*]') or user != user.strip()
                    or ">" in user or "," in user else user, password)
    except Exception:
        record(src, "imap", user, False)
        if drop_on_fail:
            m.shutdown()
        else:
            try:
                m.logout()
            except Exception:
                pass
        raise
    record(src, "imap", user, True)
    return m


# --- the 2.3 set (tools/capture/dovecot.sh) ------------------------------------------------------
def pop_ok():                       # 127.0.0.2: POP3 login + QUIT
    p = pop_login("127.0.0.2", "test", PASS); p.stat(); p.quit()


def imap_ok():                      # 127.0.0.3: IMAP login + LOGOUT
    m = imap_login("127.0.0.3", "test", PASS); m.select("INBOX"); m.logout()


def pop_badpass():                  # 127.0.0.4
    pop_login("127.0.0.4", "test", "wrong")


def imap_badpass():                 # 127.0.0.5
    imap_login("127.0.0.5", "test", "wrong")


def pop_unknown():                  # 127.0.0.6
    pop_login("127.0.0.6", "nosuchuser", PASS)


def imap_hostile1_ok():             # 127.0.0.7: a user name that carries rip=/lip= logs in
    imap_login("127.0.0.7", HOSTILE1, PASS).logout()


def imap_hostile2_ok():             # 127.0.0.8: a user name that carries rip= and session=<>
    imap_login("127.0.0.8", HOSTILE2, PASS).logout()


def pop_hostile1_ok():              # 127.0.0.10: the same through POP3 USER/PASS
    pop_login("127.0.0.10", HOSTILE1, PASS).quit()


def imap_hostile_fail():            # 127.0.0.11: hostile name, wrong password
    imap_login("127.0.0.11", HOSTILE1, "wrong")


def imap_cr_user():                 # 127.0.0.12: CR/LF inside the user name via SASL PLAIN
    imap_login("127.0.0.12", CR_NAME, PASS, sasl=True)


def pop_preauth_drop():             # 127.0.0.13: greeting read, connection dropped
    p = POP3From("127.0.0.13"); p.sock.close()


def imap_preauth_drop():            # 127.0.0.14
    m = IMAPFrom("127.0.0.14"); m.shutdown()


def imap_ok_drop():                 # 127.0.0.15: IMAP login, then the connection just drops
    m = imap_login("127.0.0.15", "test", PASS); m.select("INBOX"); m.shutdown()


def pop_ok_drop():                  # 127.0.0.16: POP3 login, then the connection just drops
    p = pop_login("127.0.0.16", "test", PASS); p.stat(); p.sock.close()


def imap_badpass_drop():            # 127.0.0.17: failed attempt, then the connection drops
    imap_login("127.0.0.17", "test", "wrong", drop_on_fail=True)


def pop_plain_sasl_ok():            # 127.0.0.18: POP3 AUTH PLAIN
    pop_login("127.0.0.18", "test", PASS, sasl=True).quit()


def imap_header_inject():           # 127.0.0.19: a user name with spaces and colons (static
    imap_login("127.0.0.19", HOSTILE3, PASS).logout()   # passdb): mail-process lines start with it


# --- added for 2.4 (tools/capture/dovecot24.sh) --------------------------------------------------
def pop_apop_ok():                  # 127.0.0.20: APOP (needs the plaintext password in the passdb)
    p = POP3From("127.0.0.20")
    try:
        p.apop("test", PASS)
    except Exception:
        record("127.0.0.20", "pop3", "test", False)
        p.quit()
        raise
    record("127.0.0.20", "pop3", "test", True)
    p.quit()


def imap_authenticate_ok():         # 127.0.0.21: IMAP AUTHENTICATE PLAIN
    imap_login("127.0.0.21", "test", PASS, sasl=True).logout()


def imap_unknown():                 # 127.0.0.22
    imap_login("127.0.0.22", "nosuchuser", PASS)


def pop_badpass_drop():             # 127.0.0.23: failed attempt, then the connection drops
    p = POP3From("127.0.0.23"); p.user("test")
    try:
        p.pass_("wrong")
    except Exception:
        record("127.0.0.23", "pop3", "test", False)
        p.sock.close()
        raise


def pop_badpass_then_ok():          # 127.0.0.24: a wrong password, then the right one, same session
    p = POP3From("127.0.0.24"); p.user("test")
    try:
        p.pass_("wrong")
    except Exception:
        record("127.0.0.24", "pop3", "test", False)
    p.user("test"); p.pass_(PASS); record("127.0.0.24", "pop3", "test", True); p.quit()


def pop_ipv6_ok():                  # ::1: POP3 over IPv6
    pop_login("::1", "test", PASS).quit()


def imap_ipv6_ok():                 # ::1: IMAP over IPv6
    imap_login("::1", "test", PASS).logout()


def imap_space_ok():                # 127.0.0.25: a user name with spaces and rip= that logs in
    imap_login("127.0.0.25", HOSTILE_SPACE, PASS).logout()


def pop_gt_ok():                    # 127.0.0.26: a user name holding ">" that logs in
    pop_login("127.0.0.26", HOSTILE_GT, PASS).quit()


def pop_hostile2_ok():              # 127.0.0.27: rip= and session=<...> through POP3
    pop_login("127.0.0.27", HOSTILE2, PASS).quit()


def imap_kicked():                  # 127.0.0.28: logged in, then `doveadm kick` ($DOVECOT_KICK)
    m = imap_login("127.0.0.28", "test", PASS)
    time.sleep(0.5)
    subprocess.run(os.environ["DOVECOT_KICK"].split() + ["test", "127.0.0.28"], check=True,
                   stdout=subprocess.DEVNULL)
    wait_for_close(m.sock)


def imap_held_until_stop():         # 127.0.0.31: logged in, still connected when dovecot stops
    m = imap_login("127.0.0.31", "test", PASS)
    write_ledger()                  # the caller stops dovecot once this file exists
    wait_for_close(m.sock)


def pop_held_until_stop():          # 127.0.0.32: the same over POP3
    p = pop_login("127.0.0.32", "test", PASS)
    write_ledger()
    try:                            # captured with 2.4.1: the pop3 process outlives the master's
        wait_for_close(p.sock, 5)   # stop and logs "Connection closed" when this client gives up
    except RuntimeError:
        p.sock.close()


def pop_burst():                    # 127.0.0.33: 20 sessions, USER/PASS/QUIT sent in one write
    burst("127.0.0.33", POP, "pop3", b"USER test\r\nPASS %s\r\nQUIT\r\n" % PASS.encode(), b"+OK Logged in")


def imap_burst():                   # 127.0.0.34: 20 sessions, LOGIN/LOGOUT sent in one write
    burst("127.0.0.34", IMAP, "imap", b"a LOGIN test %s\r\nb LOGOUT\r\n" % PASS.encode(), b"a OK")


def burst(src, port, protocol, commands, accepted, count=20):
    """count sessions that send their login and logout at once and read to the end: the
    order in which the login process's and the mail process's lines reach the log is
    theirs to choose (issue 11: a logout can come before its login)."""
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), 10, source_address=(src, 0)) as s:
            s.recv(4096)                                # the greeting
            s.sendall(commands)
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        record(src, protocol, "test", accepted in reply)


def wait_for_close(sock, seconds=30):
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except socket.timeout:
        raise RuntimeError(f"the server did not close the connection within {seconds} s")
    except OSError:
        pass


def pop_second_ok():                # 127.0.0.29: POP3 login + QUIT (a second plain session)
    p = pop_login("127.0.0.29", "test", PASS); p.stat(); p.quit()


def imap_second_ok():               # 127.0.0.30: IMAP login, select, LOGOUT
    m = imap_login("127.0.0.30", "test", PASS); m.select("INBOX"); m.logout()


DEFAULT = [
    "pop_ok", "imap_ok", "pop_badpass", "imap_badpass", "pop_unknown",
    "imap_hostile1_ok", "imap_hostile2_ok", "pop_hostile1_ok", "imap_hostile_fail",
    "imap_cr_user", "pop_preauth_drop", "imap_preauth_drop", "imap_ok_drop",
    "pop_ok_drop", "imap_badpass_drop", "pop_plain_sasl_ok"]
ALL_24 = DEFAULT + [
    "pop_apop_ok", "imap_authenticate_ok", "imap_unknown", "pop_badpass_drop",
    "pop_badpass_then_ok", "pop_ipv6_ok", "imap_ipv6_ok", "imap_space_ok", "pop_gt_ok",
    "pop_hostile2_ok", "pop_second_ok", "imap_second_ok", "imap_kicked",
    "pop_burst", "imap_burst"]
SETS = {"DEFAULT": DEFAULT, "ALL_24": ALL_24}
CURRENT = ""


def main(names):
    global CURRENT
    names = [n for name in names for n in (SETS[name] if name in SETS else [name])]
    for name in names:
        CURRENT = name
        try:
            globals()[name]()
            print("ok  ", name)
        except Exception as e:  # failures are the point of half of these
            print("fail", name, type(e).__name__, e)
        time.sleep(0.3)
    time.sleep(3)   # failed logins are logged after the auth failure delay (2 s)
    write_ledger()


def write_ledger():
    with open(LEDGER_PATH + ".part", "w") as out:
        json.dump(ledger, out, indent=0)
        out.write("\n")
    os.replace(LEDGER_PATH + ".part", LEDGER_PATH)


if __name__ == "__main__":
    main(sys.argv[5:] or DEFAULT)
