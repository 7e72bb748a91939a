"""The one error type a user sees: str() is one line naming the file, key or field and what
is wrong. Every module's own error derives from it, and the CLI prints it and exits 2."""


class LogkeyError(Exception):
    pass
