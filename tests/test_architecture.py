"""The package reads as its pipeline (docs/architecture.md): folders by stage, each importing
only from itself and from lower stages, no import circles, no module too long to read in one
sitting unless its top says why, and each stage's __init__ saying what it takes and gives.

Read from the source with `ast`, so a lazy import inside a function counts as much as one at
the top of a module: a circle through a function is still a circle."""
import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "logkey"

# The stages, lowest first. A module may import from its own stage and from a lower rank only.
# The top-level modules are shared by all stages (vocabulary and small helpers: errors, events,
# atomic, unixsock, ownlog, hostport, inotify); config is read by the stages that run as programs.
RANKS = {
    "shared": 0,
    "parse": 1, "stores": 1,
    "gates": 2, "sources": 2,
    "config": 3,
    "smtp": 4,
    "pop": 5,
    "daemon": 6,
    "commands": 7,
    "entry": 8, "__main__": 9,
}
SHARED = {"errors", "events", "atomic", "unixsock", "ownlog", "hostport", "inotify", "__init__"}
STAGES = ("sources", "parse", "gates", "stores", "smtp", "pop", "daemon", "commands")
LONG = 300           # lines; a longer module says at its top why it is one module
SLACK = 40           # "about 300": a module a little over is not worth splitting for its own sake


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        yield ".".join(parts), path, is_package


def stage(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "shared"
    if parts[1] in SHARED or (len(parts) == 2 and parts[1] not in RANKS and
                              not (PACKAGE / parts[1]).is_dir()):
        return "shared"
    return parts[1]


def imports(module: str, path: Path, is_package: bool) -> set[str]:
    """Every logkey module `module` imports, at the top or inside a function."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("logkey"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("logkey"):
                continue
            for alias in node.names:                    # `from . import journal`: a module
                candidate = target + "." + alias.name
                as_path = PACKAGE.parent / candidate.replace(".", "/")
                if as_path.with_suffix(".py").exists() or as_path.is_dir():
                    found.add(candidate)
                    break
            else:
                found.add(target)
    found.discard(module)
    return found


GRAPH = {name: imports(name, path, pkg) for name, path, pkg in modules()}


def test_every_stage_is_a_folder_whose_init_says_what_it_takes_and_gives():
    for name in STAGES:
        init = PACKAGE / name / "__init__.py"
        assert init.exists(), f"logkey/{name}/ is not a package"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert re.search(r"\bTakes\b", doc) and re.search(r"\bgives\b", doc, re.I), \
            f"logkey/{name}/__init__.py: the docstring says what the stage takes and gives"


def test_lower_stages_never_import_higher_ones():
    wrong = []
    for module, targets in GRAPH.items():
        here = stage(module)
        for target in targets:
            there = stage(target)
            if target == "logkey" or there == here:
                continue
            if RANKS[there] >= RANKS[here] and not (here == there == "shared"):
                wrong.append(f"{module} ({here}) imports {target} ({there})")
    shared_wrong = [f"{m} imports {t}" for m, ts in GRAPH.items() if stage(m) == "shared"
                    and m not in ("logkey.entry", "logkey.__main__", "logkey.config")
                    for t in ts if stage(t) != "shared"]
    assert not wrong + shared_wrong, "\n".join(wrong + shared_wrong)


def test_no_import_circles():
    def reaches(start, goal):
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for nxt in GRAPH.get(node, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False
    circles = sorted({" <-> ".join(sorted((a, b))) for a, targets in GRAPH.items()
                      for b in targets if b in GRAPH and b != "logkey" and reaches(b, a)})
    assert not circles, "\n".join(circles)


@pytest.mark.parametrize("module", [m for m, _, _ in modules()])
def test_a_long_module_says_why_it_is_one(module):
    path = next(p for m, p, _ in modules() if m == module)
    lines = len(path.read_text().splitlines())
    if lines <= LONG + SLACK:
        return
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert "One module" in doc or "one module" in doc, \
        f"{path.relative_to(PACKAGE.parent)}: {lines} lines, and its docstring does not say " \
        f"why it is one module (split it by job, or say why not)"


def test_the_architecture_page_names_every_folder_and_module():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    for name, path, is_package in modules():
        rel = path.relative_to(PACKAGE.parent)
        shown = str(rel.parent) + "/" if is_package and name != "logkey" else str(rel)
        if rel.name == "__main__.py" or name == "logkey":
            continue
        assert shown in page or rel.name in page, f"docs/architecture.md does not name {shown}"
