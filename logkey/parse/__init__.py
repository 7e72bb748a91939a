"""Parsing: a log line into an event, purely, with the pattern packs.

Takes a line (bytes or text) and the loaded packs; gives the line's header (time, host,
program) and at most one event {login|logout|connect, ip, user, protocol, time}.
"""
