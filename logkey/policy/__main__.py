"""`python -m logkey.policy ...`: the same as `logkey policy ...`."""
import argparse
import sys

from ..errors import LogkeyError
from . import add_arguments, main

parser = argparse.ArgumentParser(prog="logkey policy")
add_arguments(parser)
try:
    sys.exit(main(parser.parse_args()))
except LogkeyError as exc:
    print(f"logkey: {exc}", file=sys.stderr)
    sys.exit(2)
except KeyboardInterrupt:
    sys.exit(130)
