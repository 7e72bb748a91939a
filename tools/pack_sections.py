#!/usr/bin/env python3
"""Print the README's per-pack section from the packs themselves (description, programs,
covers). Run after changing a pack: python3 tools/pack_sections.py > /tmp/s.md, then paste."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from logkey.parse.packfiles import load_packs  # noqa: E402

for pack in load_packs().packs.values():
    print(f"### {pack.name}\n")
    print(f"{pack.description} Program tags: {', '.join(f'`{p}`' for p in pack.programs)}. "
          f"{len(pack.samples)} samples; details in [docs/packs/{pack.name}.md]"
          f"(docs/packs/{pack.name}.md).\n")
    for c in pack.covers:
        print(f"- {c}")
    print()
