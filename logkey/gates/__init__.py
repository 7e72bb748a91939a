"""Gates: the gate policy (window, refresh on logout, never-gate networks, limits).

Takes events and the gates already open; gives store writes (Put, Delete) and refusals, with
one audit line for each decision. Pure: no clock, no I/O.
"""
