"""The MTA pages' configuration snippets (docs/mta/*.md, the blocks after a
`<!-- snippet: NAME -->` line), run as written against the real servers: a real dovecot login,
a real postfix 3.7 with the page's main.cf and master.cf lines, a real tcpserver with the page's
command line. Only paths, ports and the qmail-smtpd program are substituted (a stand-in: Debian
has no qmail), and tcpserver's -u/-g (the suite runs as root)."""
from __future__ import annotations

import re
import shlex

import pytest

import servers
from conftest import ROOT, free_port
from servers import STANDIN_SMTPD, TcpServer, TempDir, wait_for
from test_e2e import wait_relays

DOCS = ROOT / "docs" / "mta"


def snippet(page: str, name: str) -> str:
    text = (DOCS / page).read_text()
    m = re.search(rf"<!-- snippet: {re.escape(name)} -->\n```[a-z]*\n(.*?)```", text, re.S)
    assert m, f"docs/mta/{page}: no snippet {name}"
    return m.group(1)


# Each page of docs/mta/: the test module that runs it, and the Debian package whose version
# the page must name (the one this run has: installed, or unpacked by .ci/mta-roots).
PAGES_RUN = {
    "postfix.md": ("test_e2e_docs.py", "postfix", None),
    "qmail.md": ("test_e2e_docs.py", "ucspi-tcp", None),
    "exim.md": ("test_e2e_mta.py", "exim4-daemon-light", "exim"),
    "opensmtpd.md": ("test_e2e_mta.py", "opensmtpd", "opensmtpd"),
    "sendmail.md": ("test_e2e_mta.py", "sendmail-bin", "sendmail"),
}


def test_every_mta_page_is_run():
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    assert pages == set(PAGES_RUN)


@pytest.mark.parametrize("page", sorted(PAGES_RUN))
def test_mta_page_says_which_versions_it_was_run_against(page):
    """As pytest's header does: "Run by the end-to-end suite (tests/MODULE) ... against ...",
    naming the Debian version of the package this run has (for an MTA in a private root, when
    .ci/mta-roots has unpacked it: the Debian 13 run has none)."""
    module, package, root = PAGES_RUN[page]
    m = re.search(rf"^Run by the end-to-end suite \(tests/{re.escape(module)}\)(.*?)\n\n",
                  (DOCS / page).read_text(), re.S | re.M)
    assert m, f"docs/mta/{page}: no paragraph 'Run by the end-to-end suite (tests/{module})'"
    said = " ".join(m.group(1).split())
    assert re.search(r"\bagainst\b.*Debian 1\d's", said), f"docs/mta/{page}: {said}"
    if root is None:
        version = servers.deb_version(package)
    else:
        from mtas import ROOTS
        try:
            unpacked = (ROOTS / f"{root}.versions").read_text().split()
        except FileNotFoundError:
            return
        version = dict(word.split("=", 1) for word in unpacked)[package]
    assert f"{package} {version}" in said, \
        f"docs/mta/{page} does not say it was run against {package} {version}: {said}"


def postfix_site(site, how: str, scope: str):
    """dovecot -> logkey watch (+ policy or lmdb export) -> postfix configured from the page."""
    dovecot = site.dovecot()
    maps = site.add(TempDir("maps")).path
    policy_port, gate_port = free_port(), free_port()

    def fill(text):
        return (text.replace("127.0.0.1:10040", f"127.0.0.1:{policy_port}")
                    .replace("/etc/postfix/logkey_clients", f"{maps}/logkey_clients"))
    logkey_yaml = fill(snippet("postfix.md", f"{how}-logkey"))
    config = site.config("logkey", [(dovecot.log_path, "dovecot")], extra=logkey_yaml)
    main = fill(snippet("postfix.md", f"{how}-main-{scope}"))
    master = ""
    extra_ports = {}
    if scope == "narrow":
        master = re.sub(r"^2525\b", f"127.0.0.1:{gate_port}",
                        snippet("postfix.md", f"{how}-master-narrow"))
        extra_ports = {"gate": gate_port}
    postfix = site.add(servers.Postfix({"port25": None}, extra_main=main, extra_master=master,
                                       extra_ports=extra_ports))
    env = {"MAIL_CONFIG": str(postfix.conf)}
    site.watch(config, env=env)
    if how == "policy":
        site.policy(config, policy_port)
    else:
        wait_for(lambda: (maps / "logkey_clients.lmdb").exists(), what="the lmdb map")
    postfix.start()
    return dovecot, postfix


@pytest.mark.parametrize("how", ["policy", "lmdb"])
@pytest.mark.parametrize("scope", ["global", "narrow"])
def test_postfix_page(site, how, scope):
    dovecot, postfix = postfix_site(site, how, scope)
    gated = "port25" if scope == "global" else "gate"
    assert not postfix.relays("127.0.0.2", gated)
    assert dovecot.pop_login("127.0.0.2")
    wait_relays(postfix, "127.0.0.2", listener=gated)
    assert not postfix.relays("127.0.0.3", gated)
    if scope == "narrow":                             # port 25 never relays for a gate
        assert not postfix.relays("127.0.0.2", "port25")
    assert "Relay access denied" not in postfix.relay("127.0.0.3", "port25",
                                                       rcpt="postmaster@mx.logkey.test")[1]


def tcpserver_argv(text: str, cdb=None) -> list[str]:
    """The page's tcpserver command line, runnable here."""
    words = shlex.split(text.replace("\\\n", " ").replace("2>&1", ""))
    out, i = [], 0
    while i < len(words):
        w = words[i]
        if w in ("-u", "-g"):
            i += 2
            continue
        if w == "-x":
            out += ["-x", str(cdb)]
            i += 2
            continue
        if w == "0" and words[i + 1] in ("smtp", "2525"):
            out += ["127.0.0.1", "{port}"]
            i += 2
            continue
        if w == "logkey":
            out += servers.logkey_cmd()
        elif w == "/var/qmail/bin/qmail-smtpd":
            out += ["/bin/sh", "-c", STANDIN_SMTPD]
        else:
            out.append(w)
        i += 1
    return out


@pytest.mark.parametrize("name", ["relayclient-global", "relayclient-narrow", "tcprules"])
def test_qmail_page(site, name):
    dovecot = site.dovecot()
    maps = site.add(TempDir("rules")).path
    extra = ""
    if name == "tcprules":
        (maps / "tcp.smtp").write_text("127.0.0.1:allow,RELAYCLIENT=\"\"\n:allow\n")
        extra = (snippet("qmail.md", "tcprules-logkey")
                 .replace("/etc/tcp.smtp.cdb", f"{maps}/tcp.smtp.cdb")
                 .replace("/etc/tcp.smtp", f"{maps}/tcp.smtp"))
    config = site.config("logkey", [(dovecot.log_path, "dovecot")], extra=extra)
    site.watch(config)
    cdb = maps / "tcp.smtp.cdb"
    if name == "tcprules":
        wait_for(cdb.exists, what="the tcprules cdb")
        argv = tcpserver_argv(snippet("qmail.md", "tcprules-tcpserver"), cdb)
    else:
        (maps / "tcp.smtp").write_text(":allow\n")
        import subprocess
        subprocess.run(["tcprules", str(cdb), str(maps / "tmp")], input=b":allow\n",
                       check=True)
        argv = tcpserver_argv(snippet("qmail.md", name), cdb)
    smtp = site.add(TcpServer(argv=argv, env={"LOGKEY_CONFIG": str(config)}))
    assert not smtp.relays("127.0.0.2")
    assert dovecot.pop_login("127.0.0.2")
    wait_for(lambda: smtp.relays("127.0.0.2"), timeout=5, what="relay", step=0.1)
    assert not smtp.relays("127.0.0.3")
