"""The watcher daemon (`logkey watch`): sources -> parse -> gates -> store, looped.

Takes the configuration; gives open and closed gates in the store and the exports, the status
file, the metrics, the drift alarm and logkey's own log lines.
"""
