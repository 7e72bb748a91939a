"""The `logkey` command line: one module per command or family of commands.

Takes argv and the configuration; gives a command's output and exit status (0 fine, 1 a
problem found, 2 bad usage or configuration), each error on one line.
"""
