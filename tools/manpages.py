#!/usr/bin/env python3
"""Write the man pages docs/man/logkey.1 and docs/man/logkey-COMMAND.1 from the CLI.

    python3 tools/manpages.py           # rewrite docs/man/*.1 (after changing the CLI)
    python3 tools/manpages.py --check   # exit 1 when a committed page is not current

The pages are rendered by argparse-manpage (PyPI `argparse-manpage`, the `test` extra) from
logkey.commands.cli.build_parser(): every option and its help is the CLI's own text, so the pages cannot
drift from `logkey COMMAND --help` (tests/test_manpages.py runs --check). logkey.1 lists the
commands and carries what is common to all (files, environment, exit status); each command has
its own page. `relayclient` parses its arguments by hand (it runs once per SMTP connection), so
its page comes from a parser built here, which must print relayclient's own USAGE line.

Output depends on argparse's formatting: pages are generated with COLUMNS=80 on the Python
minor version named in their first line (argparse's help layout changes between versions).
"""
import argparse
import os
import re
import sys
from pathlib import Path

os.environ["COLUMNS"] = "80"                    # argparse wraps usage lines to the terminal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MAN_DIR = ROOT / "docs" / "man"
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"

from argparse_manpage.manpage import Manpage  # noqa: E402

from logkey import __version__  # noqa: E402
from logkey.smtp import relayclient
from logkey.commands.cli import build_parser  # noqa: E402


def roff(text: str) -> str:
    """Plain text to roff: backslashes and hyphens escaped, no line starting with . or '."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line
                     for line in text.split("\n"))


def items(pairs) -> str:
    """A .TP list of (term, text) pairs; the term is set in bold."""
    return "\n".join(f".TP\n.B {roff(term)}\n{roff(text)}" for term, text in pairs)


FILES = items([
    ("/etc/logkey/config.yaml", "The configuration (--config FILE, else $LOGKEY_CONFIG, else "
     "this file). Relative paths in it are relative to its directory."),
    ("/etc/logkey/patterns.d/", "Local pattern packs (patterns_dir); a local pack overrides a "
     "shipped pack of the same name. Check them with logkey packs test."),
    ("/var/lib/logkey/gates/", "The dir gate store (store.path): one file per open gate, named "
     "by the IP, its mtime the expiry."),
    ("/var/lib/logkey/state/", "Read offsets of the followed logs (state_dir)."),
    ("/run/logkey/", "Sockets: policy.sock (policy.listen), popwrap.sock (popwrap.socket); "
     "relayclient's cache when the configuration's directory is not writable "
     "($LOGKEY_RUN_DIR)."),
])

ENVIRONMENT = items([
    ("LOGKEY_CONFIG", "The configuration file when --config is not given."),
    ("LOGKEY_RUN_DIR", "Where relayclient and popwrap keep their cache of the configuration "
     "when its own directory is not writable (default /run/logkey)."),
    ("LOGKEY_DEBUG", "Set to 1: an internal error prints its traceback instead of one line."),
    ("TCPREMOTEIP", "The SMTP or POP client's address, set by tcpserver (relayclient, popwrap)."),
])

EXIT_STATUS = items([
    ("0", "Success (logkey check: the gate is open)."),
    ("1", "A check failed: logkey check (no open gate), logkey packs test (a sample or rule "
     "failed)."),
    ("2", "Bad usage, configuration or pack, or an unreadable file: one line on stderr naming "
     "the file, the key and the problem."),
    ("70", "An internal error (a bug): one line on stderr."),
    ("111", "relayclient and popwrap: the program to run could not be run (qmail's temporary "
     "failure)."),
])


def relayclient_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="logkey relayclient", add_help=False,
        usage="%(prog)s " + relayclient.USAGE.removeprefix("usage: logkey relayclient "),
        description="The qmail/tcpserver SMTP-side wrapper, run once per SMTP connection: "
                    "when the gate of $TCPREMOTEIP is open it sets RELAYCLIENT=\"\", then it "
                    "execs PROG (e.g. qmail-smtpd) with the environment otherwise untouched. A "
                    "store or configuration error means no relay and one line on stderr, never "
                    "a refused connection; exit 111 when PROG cannot be run. The configuration "
                    "is read through a cache (see FILES in logkey(1)), not parsed per "
                    "connection.")
    p.add_argument("--config", metavar="FILE",
                   help="configuration file (default: $LOGKEY_CONFIG, else "
                        "/etc/logkey/config.yaml)")
    p.add_argument("prog", metavar="PROG [ARGS...]", nargs=argparse.REMAINDER,
                   help="the program to exec, e.g. /var/qmail/bin/qmail-smtpd")
    usage_options = set(re.findall(r"--[a-z-]+", relayclient.USAGE))
    page_options = {o for a in p._actions for o in a.option_strings}
    if usage_options != page_options:
        raise SystemExit(f"tools/manpages.py: relayclient's USAGE names {sorted(usage_options)}"
                         f", its page {sorted(page_options)}: update relayclient_parser()")
    return p


def page(parser, name: str, summary: str, sections=()) -> str:
    m = Manpage(parser, _data={"project_name": "logkey", "version": __version__,
                               "manual_title": "logkey manual", "manual_section": 1,
                               "date": " "}, format="pretty")
    m.prog, m.description = name, summary
    for heading, content in sections:
        m.add_section(heading, ">", content)
    body = str(m)
    return f'.\\" Generated by tools/manpages.py from logkey.commands.cli (Python {PYTHON}); do not edit.\n' + body


def render() -> dict[str, str]:
    """file name -> page text."""
    pages = {}
    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    commands = dict(sub.choices)
    helps = {c.dest: c.help for c in sub._choices_actions}
    helps["relayclient"] = "qmail/tcpserver wrapper: RELAYCLIENT for clients with an open gate"
    commands["relayclient"] = relayclient_parser()

    def see_also(but=None):
        return ", ".join(f"\\fBlogkey\\-{roff(n)}\\fR(1)" for n in sorted(commands) if n != but)

    for name, parser in commands.items():
        for action in parser._actions:          # `logkey packs ACTION`: list the actions
            if isinstance(action, argparse._SubParsersAction):
                for group in parser._action_groups:
                    if action in group._group_actions:
                        group.title = "actions"
        pages[f"logkey-{name}.1"] = page(parser, f"logkey-{name}", helps[name], [
            ("see also", f"\\fBlogkey\\fR(1) for the files, the environment and the exit "
                         f"status; {see_also(name)}.\nThe README and docs/ of logkey's source.")])

    # logkey.1: the commands listed, not repeated; what is common to all of them.
    sub._choices_actions.append(sub._ChoicesPseudoAction("relayclient", (), helps["relayclient"]))
    for choice in sub._choices_actions:
        choice.help = f"{choice.help}; see logkey-{choice.dest}(1)"
    sub.choices = {}
    for group in top._action_groups:
        if sub in group._group_actions:
            group.title = "commands"
    pages["logkey.1"] = page(top, "logkey", "POP-before-SMTP relay authorisation from mail logs", [
        ("files", FILES), ("environment", ENVIRONMENT), ("exit status", EXIT_STATUS),
        ("see also", f"{see_also()}; README.md and docs/ of logkey's source (pattern packs, "
                     "troubleshooting, migration from pop-before-smtp).")])
    return pages


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a page is not current")
    args = ap.parse_args(argv)
    pages = render()
    stale = sorted(name for name, text in pages.items()
                   if not (MAN_DIR / name).is_file() or (MAN_DIR / name).read_text() != text)
    extra = sorted(p.name for p in MAN_DIR.glob("*.1") if p.name not in pages) \
        if MAN_DIR.is_dir() else []
    if args.check:
        for name in stale:
            print(f"docs/man/{name} is not current: run python3 tools/manpages.py")
        for name in extra:
            print(f"docs/man/{name} belongs to no command: remove it")
        return 1 if stale or extra else 0
    MAN_DIR.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (MAN_DIR / name).write_text(pages[name])
    for name in extra:
        (MAN_DIR / name).unlink()
    print(f"{len(pages)} pages, {len(stale)} written, {len(extra)} removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
