"""The `logkey` console script's entry point.

`logkey relayclient ...` runs once per SMTP connection and `logkey popwrap ...` once per POP
session, so they go straight to their modules without importing logkey.commands.cli (argparse, yaml,
regex, the packs...). Every other command goes to logkey.commands.cli.main. `python -m logkey.entry ...` behaves as the script.
"""
import sys


def main() -> int:
    if sys.argv[1:2] == ["relayclient"]:
        from .smtp.relayclient import main as relayclient
        return relayclient(sys.argv[2:])
    if sys.argv[1:2] == ["popwrap"]:
        from .pop.popwrap import main as popwrap
        return popwrap(sys.argv[2:])
    from .commands.cli import main as cli_main
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
