"""Sources: where login lines and events come from, and reading them without loss.

Takes log files (followed across rotation, sought by time), the journal, popwrap's socket and
Dovecot's auth policy requests; gives raw lines (bytes) or, for the sockets, events.
"""
