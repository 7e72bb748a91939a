"""The Postfix policy service (SMTPD_POLICY_README), run by `logkey policy`.

protocol.py    the sans-I/O codec: bytes -> request dicts, action -> reply bytes
decide.py      the pure decision: OK for a client with an open gate, else DUNNO
lookups.py     the store asked for one request (in the loop or in threads), the miss wait, outages
connection.py  one client connection: requests read, replies written in order, flow control
limits.py      the connection cap, the idle timeout, client errors logged (rate-limited)
listeners.py   the listen addresses (unix:PATH, inet:HOST:PORT) opened, named and removed
server.py      the server tying them: start, signals, a clean stop
"""
