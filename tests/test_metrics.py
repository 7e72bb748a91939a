"""Prometheus metrics from a real `logkey watch` and a real `logkey policy`, scraped over HTTP
on free loopback ports; the Grafana dashboard and docs/metrics.md checked against what they
really export. Every wait is bounded."""
import json
import re
import socket
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, free_port, run_logkey, stop_process
from test_watch import append, logkey_cmd, login, stamp, wait_for

DASHBOARD = ROOT / "contrib" / "grafana" / "logkey.json"
DOCS = ROOT / "docs" / "metrics.md"


def scrape(port, host="127.0.0.1") -> dict:
    """{sample name: {labels as a sorted tuple: value}} of one scrape."""
    url = f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def started(proc, port, log, host="127.0.0.1"):
    def up():
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(up, what=f"a listener on {host}:{port}")


def ask(port, ip) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"request=smtpd_access_policy\nclient_address={ip}\n\n".encode())
        data = b""
        while not data.endswith(b"\n\n"):
            data += s.recv(100)
        return data


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """One watcher and one policy service with metrics on, after known traffic; both scraped
    (the policy service over IPv6 loopback)."""
    tmp = tmp_path_factory.mktemp("metrics")
    wport, lport = free_port(), free_port()
    pport = free_port(socket.AF_INET6, "::1")
    log = tmp / "mail.log"
    cfg = tmp / "logkey.yaml"
    cfg.write_text(f"logs: [{log}]\nstore: {{type: dir, path: {tmp}/gates}}\n"
                   f"state_dir: {tmp}/state\nexports: [{{format: text, path: {tmp}/gates.txt}}]\n"
                   f"policy: {{listen: ['inet:127.0.0.1:{lport}']}}\n"
                   f"metrics: {{watch: '127.0.0.1:{wport}', policy: '[::1]:{pport}'}}\n")
    t = stamp()
    log.write_text(
        f"{t} mail dovecot: pop3-login: Login: user=<bob>, method=PLAIN, rip=999.1.1.1, "
        "lip=192.0.2.1, mpid=2, session=<x1>\n"                         # rejected IP
        f"{t} mail dovecot: pop3-login: Logged in somehow: user=<bob>, rip=198.51.100.9\n"
        + login("127.0.0.1", user="webmail")                             # never_gate
        + f"{t} mail postfix/smtpd[7]: connect from unknown[192.0.2.5]\n")
    errs = [open(tmp / "watch.err", "wb"), open(tmp / "policy.err", "wb")]
    watch = subprocess.Popen(logkey_cmd() + ["watch", "--config", str(cfg)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=errs[0])
    policy = subprocess.Popen(logkey_cmd() + ["policy", "--config", str(cfg)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=errs[1])
    try:
        started(watch, wport, tmp / "watch.err")
        started(policy, lport, tmp / "policy.err")
        started(policy, pport, tmp / "policy.err", host="::1")
        wait_for(lambda: (tmp / "gates.txt").exists(), what="the first export")
        append(log, login("198.51.100.7"))               # after the first export: a change
        wait_for(lambda: (tmp / "gates" / "198.51.100.7").exists(), what="the gate")
        assert ask(lport, "198.51.100.7") == b"action=OK\n\n"
        assert ask(lport, "198.51.100.8") == b"action=DUNNO\n\n"
        with socket.create_connection(("127.0.0.1", lport), timeout=5) as s:
            s.sendall(b"no equals sign\n\n")                 # a client error
            s.settimeout(5)
            assert s.recv(100) == b""
        wait_for(lambda: scrape(wport).get("logkey_watch_exports_changed_timestamp_seconds"),
                 what="the export change in the metrics")
        yield {"watch": scrape(wport), "policy": scrape(pport, "::1"), "log": str(log),
               "watch_text": urllib.request.urlopen(f"http://127.0.0.1:{wport}/metrics",
                                                    timeout=5).read().decode()}
    finally:
        for proc in (watch, policy):
            stop_process(proc)
        for f in errs:
            f.close()
    assert watch.returncode == 0 and policy.returncode == 0


def value(samples, name, **labels):
    return samples[name][tuple(sorted(labels.items()))]


def test_watch_metrics_count_what_the_watcher_did(scraped):
    w, log = scraped["watch"], scraped["log"]
    assert value(w, "logkey_watch_lines_read_total", file=log) == 5
    assert value(w, "logkey_watch_bytes_behind", file=log) == 0
    assert value(w, "logkey_watch_file_readable", file=log) == 1
    assert value(w, "logkey_watch_events_total", pack="dovecot", kind="login") == 2
    assert value(w, "logkey_watch_rejected_ips_total") == 1
    assert value(w, "logkey_watch_near_misses_total") == 1
    # the near-miss came before any login (it counts), the logins after it end the alarm
    assert value(w, "logkey_watch_format_drift_lines_total", pack="dovecot") == 1
    assert value(w, "logkey_watch_format_drift", pack="dovecot") == 0
    assert value(w, "logkey_watch_gates_opened_total") == 1
    assert value(w, "logkey_watch_gates_refused_total", reason="never_gate") == 1
    assert value(w, "logkey_watch_gates_refused_total", reason="max_ips_per_user") == 0
    assert value(w, "logkey_watch_gates_open") == 1
    assert value(w, "logkey_watch_store_up", type="dir") == 1
    assert value(w, "logkey_watch_store_errors_total") == 0
    assert value(w, "logkey_watch_export_failing", format="text",
                 path=log.replace("mail.log", "gates.txt")) == 0
    assert time.time() - 60 < value(w, "logkey_watch_last_event_timestamp_seconds",
                                    pack="dovecot") <= time.time()
    assert value(w, "logkey_build_info", version=__import__("logkey").__version__) == 1
    assert "process_start_time_seconds" in w
    # Prometheus conventions: one prefix, counters end in _total, HELP and TYPE for each
    for name in w:
        assert name.startswith(("logkey_", "process_")), name
    for family in text_string_to_metric_families(scraped["watch_text"]):
        assert family.documentation, family.name
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
        if family.type == "gauge" and family.name.startswith("logkey_"):
            assert not family.name.endswith("_total"), family.name
    assert "alice" not in scraped["watch_text"] and "198.51.100.7" not in scraped["watch_text"]


def test_policy_metrics_count_answers_and_time_them(scraped):
    p = scraped["policy"]
    assert value(p, "logkey_policy_requests_total", action="OK") == 1
    assert value(p, "logkey_policy_requests_total", action="DUNNO") == 1
    assert value(p, "logkey_policy_request_duration_seconds_count") == 2
    assert value(p, "logkey_policy_request_duration_seconds_bucket", le="+Inf") == 2
    assert 0 < value(p, "logkey_policy_request_duration_seconds_sum") < 2
    assert value(p, "logkey_policy_client_errors_total") == 1
    assert value(p, "logkey_policy_store_errors_total") == 0
    assert value(p, "logkey_policy_connections") == 0
    assert not any(name.startswith("logkey_watch_") for name in p)


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set:
    """The metric names a PromQL expression reads: what is left once strings, label matchers,
    ranges, grouping clauses, functions, keywords and numbers are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        if expr[m.end():].lstrip().startswith("(") or m.group(0).lower() in PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names


def test_metric_names_of_promql():
    assert metric_names('sum by (pack, kind) (rate(a_total{x=~"$i"}[$__rate_interval]))') \
        == {"a_total"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(b_bucket[5m])))") \
        == {"b_bucket"}
    assert metric_names("count(c == 0) or vector(0)") == {"c"}
    assert metric_names("time() - d_seconds{i=~\"$instance\"}") == {"d_seconds"}


def dashboard_queries():
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append((f"variable {var['name']}", re.sub(r"^label_values\((\w+),.*\)$",
                                                          r"\1", q)))
    return board, out


def test_dashboard_names_only_metrics_that_exist(scraped):
    exported = set(scraped["watch"]) | set(scraped["policy"])
    board, queries = dashboard_queries()
    used = set()
    for title, expr in queries:
        names = metric_names(expr)
        assert names, (title, expr)
        missing = names - exported
        assert not missing, f"panel {title!r} uses {sorted(missing)}, not exported"
        used |= names
    assert len(used) >= 20 and board["uid"] == "logkey"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_docs_describe_every_metric_and_every_panel(scraped):
    docs = DOCS.read_text()
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", n)     # _created: 0.16
                for n in set(scraped["watch"]) | set(scraped["policy"])
                if n.startswith("logkey_")}
    for name in sorted(families):
        assert f"`{name}" in docs, f"docs/metrics.md does not describe {name}"
    board, _ = dashboard_queries()
    for panel in board["panels"]:
        text = f"### {panel['title']} row" if panel["type"] == "row" else f"**{panel['title']}**"
        assert text in docs, f"docs/metrics.md: no {text!r}"


def test_bad_metrics_address_is_one_line_and_no_start(tmp_path):
    cfg = tmp_path / "logkey.yaml"
    cfg.write_text(f"logs: []\nstate_dir: {tmp_path}/state\n"
                   "metrics: {watch: 'localhost:9469'}\n")
    proc = run_logkey("watch", "--config", str(cfg), "--once")
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == (
        f"logkey: {cfg}: metrics.watch: 'localhost:9469' is not IP:PORT "
        "(e.g. 127.0.0.1:9469 or [::1]:9469)")
    with socket.socket() as busy:                       # the port is taken
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg.write_text(f"logs: []\nstate_dir: {tmp_path}/state\nstore: {{type: dir, path: "
                       f"{tmp_path}/gates}}\nmetrics: {{watch: '127.0.0.1:{port}'}}\n")
        proc = run_logkey("watch", "--config", str(cfg), "--once")
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().endswith(
        f"metrics.watch: cannot listen on 127.0.0.1:{port}: Address already in use")
