"""match._read_fields' fast reading (one findall) gives exactly the answer of one find per key,
for any text, including duplicate, missing and separator-like keys (issue 17)."""
from hypothesis import given, settings, strategies as st

from logkey.parse import match
from logkey.parse.packs import Fields

TOKENS = ["rip", "user", "session", "ip", "=", ", ", ",", " ", "<", ">", "> ", "x", "1.2.3.4",
          "ri", "p=", ";", "; ", "\n", "\u00e9", "==", ",,"]
SPECS = [Fields(", ", {"rip": "ip", "user": "user", "session": "session"}, ("<", ">")),
         Fields(", ", {"ip": "ip", "rip": "ip"}, None),
         Fields(" ", {"user": "user", "ip": "ip"}, ("[", "]")),
         Fields("; ", {"rip": "ip", "": "user"}, None),
         Fields(",,", {"rip": "ip"}, None),         # a separator that overlaps itself: by find
         Fields(", ", {"a,b": "ip"}, None),         # a key holding the separator: by find
         Fields("=", {"rip": "ip"}, None)]


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(SPECS), st.lists(st.sampled_from(TOKENS), max_size=16))
def test_fields_fast_reading_is_find_reading(spec, tokens):
    text = "".join(tokens)
    fast, by_find = {}, {}
    assert (match._read_fields(spec, text, fast), fast) == \
        (match._read_fields_by_find(spec, text, by_find), by_find)


def test_fields_dovecot_login():
    spec = SPECS[0]
    got = {}
    assert match._read_fields(spec, "user=<u1>, method=PLAIN, rip=198.51.1.2, lip=192.0.2.1, "
                              "session=<I1x2>", got) is None
    assert got == {"user": "u1", "ip": "198.51.1.2", "session": "I1x2"}
    assert match._read_fields(spec, "user=<x, rip=1.1.1.1>, rip=2.2.2.2", {}) == \
        "field rip= appears more than once"
    assert match._read_fields(spec, "user=<x>", {}) == "field rip= missing"
