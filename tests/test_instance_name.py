"""A Dovecot with `instance_name` set logs under that name instead of `dovecot` (issue 11): a
real dovecot with `instance_name = mx2` logging through its own rsyslogd (tests/servers.py's
SyslogNamespace), one POP3 and one IMAP login. Without help logkey reads nothing of it; with
`aliases: {mx2: dovecot}` in the file's `logs:` entry, dry-run and watch read it with the
dovecot pack's rules, and a bad alias is one clear error line. (Debian 12's dovecot 2.3 here;
in the Debian 13 suite the same test runs on 2.4.)"""
import json
import re

from conftest import run_logkey, wait_for
from servers import Dovecot, SyslogNamespace


def config(tmp_path, log, aliases="{mx2: dovecot}"):
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"logs:\n  - {{path: {log}, sender_verified: true, aliases: {aliases}}}\n"
                   f"store: {{type: dir, path: {tmp_path / 'gates'}}}\n"
                   f"state_dir: {tmp_path / 'state'}\nwindow: 10m\n")
    return cfg


def logins(*args):
    proc = run_logkey("dry-run", "--json", *args, check=0)
    return sorted((r["ip"], r["protocol"], r["user"]) for r in map(json.loads, proc.stdout.splitlines())
                  if r.get("type") == "event" and r["event"] == "login")


def test_instance_name_is_read_through_an_alias(tmp_path, site, watch):
    namespace = site.add(SyslogNamespace(Dovecot(name="mx2", log="syslog"))).start()
    dovecot = namespace.dovecot
    log = namespace.traditional
    cfg = config(tmp_path, log)
    watch(cfg)
    assert dovecot.pop_login("127.0.0.2") and dovecot.imap_login("127.0.0.3")
    assert not dovecot.pop_login("127.0.0.4", password="wrong")
    wait_for(lambda: (tmp_path / "gates" / "127.0.0.2").exists()
             and (tmp_path / "gates" / "127.0.0.3").exists(), what="the gates of mx2's logins")
    assert not (tmp_path / "gates" / "127.0.0.4").exists()
    text = log.read_text()
    assert re.search(r" mx2: pop3-login: (?:Login|Logged in): user=<test>", text), text  # 2.3, 2.4
    assert " dovecot: " not in text, text
    assert logins(str(log)) == []                        # the tag alone says nothing
    assert logins("--config", str(cfg), str(log)) == [("127.0.0.2", "pop3", "test"),
                                                      ("127.0.0.3", "imap", "test")]


def test_a_bad_alias_is_one_error_line(tmp_path):
    for aliases, needle in [("{mx2: nosuchprogram}", "logs[0].aliases.mx2: no loaded pack reads "
                                                     "program 'nosuchprogram'"),
                            ("[mx2]", "logs[0].aliases: must be a mapping"),
                            ("{'mx 2': dovecot}", "is not a program tag")]:
        cfg = config(tmp_path, tmp_path / "mail.log", aliases)
        proc = run_logkey("config", "check", "--config", str(cfg), check=2)
        err = proc.stderr.decode()
        assert needle in err and len(err.strip().splitlines()) == 1, err
