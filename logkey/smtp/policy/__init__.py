"""The Postfix policy service (SMTPD_POLICY_README), run by `logkey policy`.

protocol.py  the sans-I/O codec: bytes -> request dicts, action -> reply bytes
decide.py    the pure decision: OK for a client with an open gate, else DUNNO
server.py    asyncio listeners (unix:PATH, inet:HOST:PORT), limits, timeouts, signals
"""
