"""`logkey policy`: Postfix SMTP access policy delegation (SMTPD_POLICY_README).

The service itself is logkey/smtp/policy/ (codec, decision, asyncio server); this module
reads the configuration, sets up logkey's own log and the metrics, and runs it.

Config: `policy:` (listen, socket_mode, socket_group, max_request, idle_timeout, miss_wait),
`store:`, `ipv6_prefix:`, `metrics.policy` (Prometheus metrics address; daemon/metrics.py, imported
only then). `--event-loop`: uvloop when installed (the optional extra `fast`), else asyncio's. `add_parser(sub)` registers the subcommand; `main(args)` runs it.
"""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="configuration file (default: $LOGKEY_CONFIG, else "
                        "/etc/logkey/config.yaml)")
    p.add_argument("--listen", action="append", metavar="ADDR",
                   help="unix:PATH, inet:HOST:PORT or inet:[IPV6]:PORT (repeatable); "
                        "replaces the configured policy.listen")
    p.add_argument("--event-loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="uvloop (pip install 'logkey[fast]') or asyncio's own; auto: uvloop "
                        "when installed (default)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    p.add_argument("--log", choices=("stderr", "syslog"),
                   help="where logkey's own log goes (default: log.to, else stderr)")


def add_parser(sub):
    """Register `policy` on an argparse subparsers object."""
    p = sub.add_parser(
        "policy", help="Postfix policy service: OK for clients with an open gate",
        description="Answer Postfix check_policy_service requests: action=OK when the "
                    "client_address has an open gate, action=DUNNO otherwise (and whenever "
                    "the store cannot be read). Runs in the foreground; SIGTERM stops it.")
    add_arguments(p)
    p.set_defaults(func=main)
    return p


def main(args) -> int:
    import asyncio

    from .. import config as config_mod
    from ..ownlog import configure as configure_log, to_stderr
    from ..stores import open_store
    from ..smtp.policy.listeners import parse_listen
    from ..smtp.policy.server import PolicyServer, event_loop_factory

    to_stderr(getattr(args, "verbose", False))
    cfg = config_mod.load(args.config)
    configure_log(cfg.log, getattr(args, "verbose", False), getattr(args, "log", None))
    policy = cfg.policy
    listen = args.listen or policy["listen"]
    for spec in listen:
        parse_listen(spec)                          # a bad --listen is a one-line error
    new_loop = event_loop_factory(getattr(args, "event_loop", "auto"))
    store = open_store(cfg.store)
    try:
        server = PolicyServer(store, listen=listen, ipv6_prefix=cfg.ipv6_prefix,
                              socket_mode=policy["socket_mode"],
                              socket_group=policy["socket_group"],
                              max_request=policy["max_request"],
                              idle_timeout=policy["idle_timeout"],
                              miss_wait=policy["miss_wait"])
        if cfg.metrics["policy"]:
            from ..daemon.metrics import PolicyMetrics, serve_policy
            metrics = PolicyMetrics(server)
            server.measure(metrics)
            http = serve_policy(metrics, cfg.metrics["policy"])
        try:
            with asyncio.Runner(loop_factory=new_loop) as runner:
                runner.run(server.run())
        finally:
            if cfg.metrics["policy"]:
                http.close()
    finally:
        store.close()
    return 0
