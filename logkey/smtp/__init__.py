"""The SMTP side: how an MTA asks whether a client may relay.

Takes the gate store; gives answers to Postfix's policy delegation (policy/), qmail's
RELAYCLIENT (relayclient.py) and map files for sendmail, Exim, OpenSMTPD and Postfix (exports).
"""
