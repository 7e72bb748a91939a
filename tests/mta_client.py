"""Clients run inside an MTA's network namespace (tests/mtas.py: `nsenter -n python3 THIS ...`),
each from a source address of its own:
  open HOST PORT                  exit 0 when something listens there
  pop SRC PORT USER PASSWORD      a POP3 login (USER/PASS, STAT, QUIT); prints ok or failed
  rcpt SRC HOST PORT RCPT         EHLO, MAIL, RCPT; prints the RCPT reply's code and text"""
import poplib
import smtplib
import socket
import sys

mode, *args = sys.argv[1:]
if mode == "open":
    try:
        socket.create_connection((args[0], int(args[1])), timeout=1).close()
    except OSError:
        sys.exit(1)
elif mode == "pop":
    src, port, user, password = args
    sock = socket.create_connection(("127.0.0.1", int(port)), timeout=20, source_address=(src, 0))

    class POP3From(poplib.POP3):
        def _create_socket(self, timeout):
            return sock
    p = POP3From("127.0.0.1", int(port), timeout=20)
    try:
        p.user(user)
        p.pass_(password)
        p.stat()
        print("ok")
    except poplib.error_proto:
        print("failed")
    p.quit()
elif mode == "rcpt":
    src, host, port, rcpt = args
    with smtplib.SMTP(host, int(port), local_hostname="client.logkey.test",
                      source_address=(src, 0), timeout=30) as smtp:
        smtp.ehlo()
        code, text = smtp.mail("sender@client.logkey.test")
        assert code == 250, (code, text)
        code, text = smtp.rcpt(rcpt)
        print(code, text.decode(errors="replace").replace("\n", " "))
