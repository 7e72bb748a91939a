"""The POP side of a qmail chain: popwrap, a wrapper in front of qmail-popup/checkpassword.

Takes a POP session (tcpserver's environment, the child's exit status, or the protocol seen
through popfilter); gives login events, to the watcher's socket or straight to the store.
"""
