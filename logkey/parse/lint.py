"""Safety lint for pack regexes: anchoring, no unbounded wildcard before the ip group, an ip
group that can only match address characters. Pure; returns a reason string or None.

The checks read the pattern text with a small tokenizer (escapes, classes, groups,
quantifiers); it is deliberately conservative: what it cannot classify, it refuses.
"""
from __future__ import annotations

import re

ADDRESS_CHARS = frozenset("0123456789abcdefABCDEF.:")
_QUANT = re.compile(r"\*\??|\+\??|\?\??|\{(\d*)(,?)(\d*)\}\??")
_WIDE_ESCAPES = frozenset("SWDN")          # \S \W \D and \N: match nearly anything
_CLASS_ESCAPES = {"d": "0123456789"}


def _read_class(src: str, i: int) -> tuple[int, bool, str | None]:
    """src[i] == '['. Returns (end index, negated, member chars if simple else None)."""
    j = i + 1
    negated = j < len(src) and src[j] == "^"
    if negated:
        j += 1
    members: set[str] | None = set()
    first = True
    while j < len(src):
        c = src[j]
        if c == "]" and not first:
            return j + 1, negated, ("".join(sorted(members)) if members is not None else None)
        first = False
        if c == "\\" and j + 1 < len(src):
            e = src[j + 1]
            if e in _CLASS_ESCAPES and members is not None:
                members.update(_CLASS_ESCAPES[e])
            elif e in ".:-[]\\^" and members is not None:
                members.add(e)
            else:
                members = None
            j += 2
            continue
        if c == "[":                      # nested set syntax of the regex module: refuse
            members = None
        elif j + 2 < len(src) and src[j + 1] == "-" and src[j + 2] != "]":
            lo, hi = c, src[j + 2]
            if members is not None:
                if ord(hi) - ord(lo) > 200:
                    members = None
                else:
                    members.update(chr(k) for k in range(ord(lo), ord(hi) + 1))
            j += 3
            continue
        elif members is not None:
            members.add(c)
        j += 1
    raise ValueError("unterminated character class")


def _tokens(src: str):
    """Yield (kind, text, extra) for atoms and group marks: kinds 'atom', 'open', 'close', 'alt'.
    For atoms extra = (wide: bool, chars: str|None)."""
    i = 0
    n = len(src)
    while i < n:
        c = src[i]
        if c == "\\":
            e = src[i + 1] if i + 1 < n else ""
            if e in _CLASS_ESCAPES:
                yield "atom", src[i:i + 2], (False, _CLASS_ESCAPES[e])
            elif e.isalpha() and e not in "AZbBzG":
                yield "atom", src[i:i + 2], (e in _WIDE_ESCAPES, None if e.isalpha() else e)
            elif e in "AZbBzG":
                yield "anchor", src[i:i + 2], None
            else:
                yield "atom", src[i:i + 2], (False, e)
            i += 2
        elif c == "[":
            end, negated, members = _read_class(src, i)
            yield "atom", src[i:end], (negated, None if negated else members)
            i = end
        elif c == "(":
            m = re.match(r"\(\?P<([A-Za-z_]\w*)>|\(\?<([A-Za-z_]\w*)>|\(\?:|\(\?[=!]|\(\?<[=!]|\(", src[i:])
            text = m.group(0)
            name = m.group(1) or m.group(2)
            yield "open", text, name
            i += len(text)
        elif c == ")":
            yield "close", ")", None
            i += 1
        elif c == "|":
            yield "alt", "|", None
            i += 1
        elif c in "^$":
            yield "anchor", c, None
            i += 1
        elif c == ".":
            yield "atom", ".", (True, None)
            i += 1
        else:
            m = _QUANT.match(src, i)
            if m:
                yield "quant", m.group(0), m
                i = m.end()
            else:
                yield "atom", c, (False, c)
                i += 1


def _unbounded(q: re.Match | None) -> bool:
    if q is None:
        return False
    text = q.group(0)
    if text[0] in "*+":
        return True
    if text[0] == "{":
        return q.group(2) == "," and q.group(3) == ""
    return False


def check(src: str, needs_ip_group: bool) -> str | None:
    """A reason the pattern is unsafe, or None."""
    if not src.startswith("^"):
        return "regex must be anchored at the start of the message with ^"
    if not src.endswith("$") or src.endswith("\\$"):
        return "regex must be anchored at the end of the message with $"
    try:
        toks = list(_tokens(src))
    except (ValueError, AttributeError) as exc:
        return f"cannot read pattern ({exc})"
    # Pass over the tokens; a stack of groups tracks whether a group holds a wide atom.
    stack: list[dict] = [{"wide": False, "name": None}]
    seen_ip = False
    ip_chars_ok = True
    ip_depth = None
    k = 0
    while k < len(toks):
        kind, text, extra = toks[k]
        nxt = toks[k + 1] if k + 1 < len(toks) and toks[k + 1][0] == "quant" else None
        quant = nxt[2] if nxt else None
        if kind == "open":
            stack.append({"wide": False, "name": extra})
            if extra == "ip":
                if seen_ip:
                    return "the ip group appears twice"
                ip_depth = len(stack)
            if text.startswith("(?=") or text.startswith("(?!") or text.startswith("(?<"):
                if extra is None:
                    stack[-1]["look"] = True
        elif kind == "close":
            if len(stack) < 2:
                return "unbalanced parentheses"
            group = stack.pop()
            if ip_depth is not None and len(stack) + 1 == ip_depth:
                seen_ip = True
                ip_depth = None
            if group["wide"] and not seen_ip and _unbounded(quant) and ip_depth is None:
                return f"unbounded repeat of a wildcard group before the ip group near {text}"
            stack[-1]["wide"] = stack[-1]["wide"] or group["wide"]
        elif kind == "atom":
            wide, chars = extra
            if ip_depth is not None:
                if chars is None or not set(chars) <= ADDRESS_CHARS:
                    ip_chars_ok = False
            elif wide and not seen_ip:
                if _unbounded(quant):
                    return (f"unbounded wildcard {text}{nxt[1]} before the ip group "
                            f"(bound it, e.g. {text}{{0,255}})")
                stack[-1]["wide"] = True
        elif kind == "alt" and ip_depth is not None:
            pass
        elif kind == "quant" and k > 0 and toks[k - 1][0] in ("quant", "open", "alt"):
            return f"misplaced quantifier {text}"
        k += 2 if nxt else 1
    if len(stack) != 1:
        return "unbalanced parentheses"
    if needs_ip_group and not seen_ip:
        return "no ip group"
    if seen_ip and not ip_chars_ok:
        return "the ip group may match characters other than 0-9 a-f A-F . :"
    return None
