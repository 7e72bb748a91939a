"""`logkey packs list` and `logkey packs test`: the packs a site runs, and checking them the
way fail2ban users check a filter with fail2ban-regex.

Reads: the shipped packs, the local packs directory (`patterns_dir`, default
/etc/logkey/patterns.d; a local pack overrides a shipped one of the same name) and pack files
named on the command line (`logkey packs test ./mypack.yaml` tests a pack before it is
installed; it stands in for any pack of the same name).
Writes: stdout only.
Exit: 0 every sample holds; 1 a sample fails or a rule has no sample; 2 a pack or the
configuration cannot be loaded (one line naming the file, the entry and the reason).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


SOURCE_KINDS = ("captured", "published", "constructed", "other")


def source_kind(source) -> str:
    """Which of SOURCE_KINDS a sample's free-text `source:` is: captured from a real server,
    published (real lines from a public log, shared/samples), constructed (from a format string
    or source code; hostile lines), or other (a site's own wording)."""
    text = str(source or "").strip().lower()
    if text.startswith("captured"):
        return "captured"
    if "constructed" in text or text.startswith("hostile"):
        return "constructed"
    if text.startswith(("shared/samples", "published", "http://", "https://")) \
            or "(published" in text:
        return "published"
    return "other"


def origin(pack) -> tuple[str, bool]:
    """("shipped" | "local", overrides a shipped pack of the same name)."""
    from ..parse.packfiles import shipped_dir
    shipped = shipped_dir().resolve()
    path = Path(pack.path).resolve()
    if path.parent == shipped:
        return "shipped", False
    return "local", (shipped / f"{pack.name}.yaml").is_file()


def describe(pack) -> dict:
    where, overrides = origin(pack)
    kinds = Counter(source_kind(s.get("source")) for s in pack.samples)
    return {
        "pack": pack.name, "origin": where, "overrides_shipped": overrides,
        "file": str(pack.path), "description": pack.description,
        "programs": list(pack.programs),
        "events": [{"id": r.id, "kind": r.kind, "untagged": r in pack.untagged}
                   for r in pack.rules + pack.untagged],
        "samples": len(pack.samples),
        "sources": {k: kinds[k] for k in SOURCE_KINDS if kinds[k]},
        "journal": {program: {k: sorted(v, key=str) for k, v in match.items()}
                    for program, match in (pack.journal or {}).items()},
    }


def _is_file_arg(arg: str) -> bool:
    return arg.endswith((".yaml", ".yml")) or "/" in arg


def _load(args, cfg, wanted):
    """The PackSet for `wanted` (names and pack files), and the names asked for."""
    files = [a for a in wanted if _is_file_arg(a)]
    names = [Path(a).stem if _is_file_arg(a) else a for a in wanted]
    only = cfg.packs and sorted(set(cfg.packs) | {Path(f).stem for f in files})
    from ..parse.packfiles import load_packs    # (not at import: every command builds the parser)
    return load_packs(only or None, cfg.patterns_dir, extra=files, services=cfg.services, proxies=cfg.trusted_proxies), names


def cmd_list(args, cfg) -> int:
    packs, names = _load(args, cfg, args.pack or [])
    missing = [n for n in names if n not in packs.packs]
    if missing:
        raise LookupError(missing[0], list(packs.packs))
    chosen = [packs.packs[n] for n in names] if names else list(packs.packs.values())
    for pack in chosen:
        d = describe(pack)
        if args.json:
            print(json.dumps(d))
            continue
        where = d["origin"] + (", overrides the shipped pack" if d["overrides_shipped"] else "")
        events = ", ".join(f"{e['id']} ({e['kind']}{', untagged' if e['untagged'] else ''})"
                           for e in d["events"])
        sources = ", ".join(f"{n} {k}" for k, n in d["sources"].items())
        print(f"{pack.name}: {pack.description}")
        print(f"  from:     {where}: {pack.path}")
        print(f"  programs: {', '.join(pack.programs)}")
        print(f"  events:   {events}")
        for program, match in d["journal"].items():
            print(f"  journal:  {program} = " + " ".join(
                f"{k}={'|'.join(map(str, v))}" for k, v in match.items()))
        print(f"  samples:  {d['samples']} ({sources})")
    return 0


def cmd_test(args, cfg) -> int:
    from ..parse.packtest import check_pack
    packs, names = _load(args, cfg, args.names)
    missing = [n for n in names if n not in packs.packs]
    if missing:
        raise LookupError(missing[0], list(packs.packs))
    total = failed = untested = 0
    for name in names or list(packs.packs):
        result = check_pack(packs, packs.packs[name])
        total += result.samples
        failed += len(result.failures)
        untested += len(result.untested)
        for f in result.failures:
            print(f"FAIL {f.pack} samples[{f.index}]: {f.problem}\n     {f.line[:200]!r}")
        for rule in result.untested:
            print(f"FAIL {name}: rule {rule!r} matches no sample (add a line it must match)")
        print(f"{name}: {result.samples - len(result.failures)}/{result.samples} samples pass"
              + (f", {len(result.untested)} rule(s) without a sample" if result.untested else ""))
    print(f"{total - failed} passed, {failed} failed"
          + (f", {untested} rule(s) without a sample" if untested else ""))
    return 1 if failed or untested else 0


def add_parser(sub, add_config, load_config, usage_error):
    """Register `packs list|test` on logkey.commands.cli's subparsers. `load_config(args)` loads the
    (optional) configuration; `usage_error` is the exception cli.main prints as one line."""

    def run(fn):
        def call(args):
            try:
                return fn(args, load_config(args))
            except LookupError as exc:
                name, have = exc.args
                raise usage_error(f"no pack named {name!r} (have: {', '.join(have)})") from None
        return call

    p = sub.add_parser("packs", help="list or test pattern packs",
                       description="List the pattern packs (shipped, and local ones in "
                                   "patterns_dir), or run the samples they carry.")
    psub = p.add_subparsers(dest="packs_command", metavar="ACTION")
    pl = psub.add_parser("list", help="packs, programs, events, samples and their sources",
                         description="Show every loaded pack: where it comes from (shipped, "
                                     "or local and overriding a shipped one), its program "
                                     "tags, its event rules, and how many samples it carries "
                                     "from which kind of source (captured from a real server, "
                                     "published, constructed).")
    add_config(pl, optional=True)
    pl.add_argument("--pack", action="append", metavar="NAME|FILE",
                    help="only this pack (repeatable); a .yaml file is loaded in place of "
                         "the pack of its name")
    pl.add_argument("--json", action="store_true", help="one JSON object per pack")
    pl.set_defaults(func=run(cmd_list))
    pt = psub.add_parser("test", help="run the packs' samples (exit 1 on any mismatch)",
                         description="Run every sample of the named packs (default: all "
                                     "loaded packs) against all loaded packs, and check that "
                                     "every rule matches at least one sample. A PACK that is a "
                                     "file (ends in .yaml or holds a /) is loaded in place of "
                                     "the pack of its name. Exit 0 when all hold, 1 on any "
                                     "failure, 2 when a pack cannot be loaded.")
    add_config(pt, optional=True)
    pt.add_argument("names", nargs="*", metavar="PACK|FILE",
                    help="a pack's name, or a pack file to load in place of the pack of its name")
    pt.set_defaults(func=run(cmd_test))
    p.set_defaults(func=lambda a, p=p: (p.print_help(), 2)[1])
    return p
