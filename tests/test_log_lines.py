"""docs/log-lines.md lists every line logkey logs: each log call in the source (log.info(...),
log.log(...), relayclient's and popwrap's _say(...)) must have its fixed text there."""
import ast
import re

from conftest import ROOT

DOC = (ROOT / "docs" / "log-lines.md").read_text()
LEVELS = {"debug", "info", "warning", "error", "critical", "exception"}
PLACEHOLDER = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[sdrgfx]")


def fixed_text(node) -> list[str]:
    """The literal pieces of a format string or f-string."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return PLACEHOLDER.split(node.value)
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return fixed_text(node.left) + fixed_text(node.right)
    return []


def log_calls():
    for path in sorted((ROOT / "logkey").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
                    and f.value.id == "log" and f.attr in LEVELS:
                fmt = node.args[0]
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
                    and f.value.id == "log" and f.attr == "log" and len(node.args) > 1:
                fmt = node.args[1]
            elif isinstance(f, ast.Name) and f.id == "_say":
                fmt = node.args[0]
            else:
                continue
            yield f"{path.relative_to(ROOT)}:{node.lineno}", fixed_text(fmt)


def test_every_log_line_is_in_docs_log_lines():
    calls = list(log_calls())
    assert len(calls) > 50                                   # the walk finds the calls
    missing = []
    for where, pieces in calls:
        for piece in (p.strip() for p in pieces):
            if len(piece) >= 6 and piece not in DOC:
                missing.append(f"{where}: {piece!r}")
    assert missing == []
