"""POP3 / IMAP clients that connect from a chosen loopback source address (run by hand, not by CI).

Imported by the drivers that the capture scripts in this folder generate into their temp dirs:
each script puts this folder in the environment variable LOGKEY_CAPTURE_DIR and the driver does
``sys.path.insert(0, os.environ["LOGKEY_CAPTURE_DIR"])`` before ``from clients import ...``.

Every session comes from its own 127.0.0.N so that the server's log lines can be told apart by
the client address.
"""
import imaplib
import poplib
import socket


class _FromSource:
    """Connects from source address src (any port) instead of letting the kernel choose."""

    def __init__(self, src, port, host="127.0.0.1", timeout=10, **kw):
        self.src = src
        super().__init__(host, port, timeout=timeout, **kw)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.src, 0))


class POP3From(_FromSource, poplib.POP3):
    """poplib.POP3 to host:port from source address src: POP3From(src, port, host, timeout)."""


class IMAPFrom(_FromSource, imaplib.IMAP4):
    """imaplib.IMAP4 to host:port from source address src: IMAPFrom(src, port, host, timeout)."""


class IMAPSFrom(_FromSource, imaplib.IMAP4_SSL):
    """imaplib.IMAP4_SSL (TLS from the first byte) from source address src; also takes ssl_context."""

    def _create_socket(self, timeout):
        return self.ssl_context.wrap_socket(super()._create_socket(timeout), server_hostname=self.host)
