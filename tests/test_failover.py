"""A Redis failover under load: a real redis-server master and replica, three real
redis-sentinel processes (Debian package redis-sentinel), all on loopback with their files in
a temp dir; `logkey watch` and `logkey policy` find the master through the sentinels. While
logins flow into the log, the master is killed with -9. The watcher and the policy service
must follow the promoted replica, every gate must be in it at the end (those written to the
old master just before it died included: written again), and the policy service must never
answer OK for an address that has no gate (DUNNO during the outage is right). Bounded: about
25 s."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import free_port, stop_process, wait_for

redis = pytest.importorskip("redis")

LOGIN = ("{stamp} mail dovecot: pop3-login: Login: user=<u{n}>, method=PLAIN, rip={ip}, "
         "lip=192.0.2.1, mpid={n}, session=<s{n}>\n")


def binary(name):
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin")
    if path is None:
        pytest.fail(f"{name} not found: .ci/run installs it (apt-get install redis-server "
                    "redis-sentinel)")
    return path


class Cluster:
    """Master, replica and three sentinels (quorum 2, down after 1 s)."""

    def __init__(self, workdir):
        self.dir = workdir
        self.procs = {}
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]

    def _spawn(self, name, argv):
        log = open(os.path.join(self.dir, name + ".log"), "wb")
        self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)
        log.close()

    def start(self):
        server = binary("redis-server")
        for name, port, extra in (("master", self.master_port, []),
                                  ("replica", self.replica_port,
                                   ["--replicaof", "127.0.0.1", str(self.master_port)])):
            d = os.path.join(self.dir, name)
            os.mkdir(d)
            self._spawn(name, [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", d, *extra])
        for port in (self.master_port, self.replica_port):
            wait_for(lambda p=port: self._ping(p), what=f"redis-server on {port}")
        wait_for(lambda: redis.Redis(port=self.replica_port).info("replication")
                 .get("master_link_status") == "up", what="the replica to sync")
        sentinel = binary("redis-sentinel")
        for i, port in enumerate(self.sentinel_ports):
            conf = os.path.join(self.dir, f"sentinel{i}.conf")
            with open(conf, "w") as f:
                f.write(f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                        f"sentinel monitor mymaster 127.0.0.1 {self.master_port} 2\n"
                        "sentinel down-after-milliseconds mymaster 1000\n"
                        "sentinel failover-timeout mymaster 10000\n"
                        "sentinel parallel-syncs mymaster 1\n")
            self._spawn(f"sentinel{i}", [sentinel, conf])

        def ready():
            for port in self.sentinel_ports:
                try:
                    m = redis.Redis(port=port, socket_timeout=1).sentinel_master("mymaster")
                except redis.RedisError:
                    return False
                if m.get("num-other-sentinels") != 2 or m.get("num-slaves") != 1:
                    return False
            return True
        wait_for(ready, timeout=30, step=0.2, what="three sentinels that know the replica")

    @staticmethod
    def _ping(port):
        try:
            return redis.Redis(port=port, socket_timeout=0.5).ping()
        except redis.RedisError:
            return False

    def master(self):
        """The port the sentinels name as master now."""
        for port in self.sentinel_ports:
            try:
                return int(redis.Redis(port=port, socket_timeout=1)
                           .sentinel_get_master_addr_by_name("mymaster")[1])
            except (redis.RedisError, TypeError):
                continue
        return None

    def kill_master(self):
        self.procs["master"].send_signal(signal.SIGKILL)
        self.procs["master"].wait(10)

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                stop_process(proc)

    def log(self):
        out = []
        for name in self.procs:
            with open(os.path.join(self.dir, name + ".log"), errors="replace") as f:
                out.append(f"--- {name}\n{f.read()[-1500:]}")
        return "\n".join(out)


def ask(port, ip) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
                  b"client_address=" + ip.encode() + b"\nclient_name=unknown\n"
                  b"sender=a@b.example\nrecipient=c@d.example\n\n")
        data = b""
        while not data.endswith(b"\n\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


def test_redis_failover_loses_no_gate_and_never_answers_ok_without_one(tmp_path):
    from servers import Logkey
    workdir = tempfile.mkdtemp(prefix="lk-failover-")
    cluster = Cluster(workdir)
    running = []
    try:
        cluster.start()
        old_master = cluster.master()
        assert old_master == cluster.master_port
        log = tmp_path / "mail.log"
        log.write_text("")
        port = free_port()
        hosts = ", ".join(f'"127.0.0.1:{p}"' for p in cluster.sentinel_ports)
        cfg = tmp_path / "logkey.yaml"
        cfg.write_text(f"logs:\n  - path: {log}\n    packs: [dovecot]\n"
                       f"store: {{type: redis, url: 'redis:///0', "
                       f"sentinel: {{hosts: [{hosts}], service: mymaster}}}}\n"
                       f"state_dir: {tmp_path / 'state'}\nwindow: 10m\nmax_ips_per_user: 0\n"
                       f"policy:\n  listen: [inet:127.0.0.1:{port}]\n  miss_wait: 0s\n")
        watch = Logkey("watch", cfg).start()
        running.append(watch)
        policy = Logkey("policy", cfg).start(ready=lambda: _port_open(port))
        running.append(policy)

        written, stop = [], threading.Event()
        answers = {"OK": 0, "DUNNO": 0, "other": 0}
        wrong = []                      # OK for an address without a gate

        def write():
            for n in range(240):
                if stop.is_set():
                    return
                ip = f"198.18.{n // 250}.{n % 250 + 1}"
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
                with open(log, "a") as f:
                    f.write(LOGIN.format(stamp=stamp, n=n, ip=ip))
                written.append(ip)
                time.sleep(0.05)

        def probe():
            n = 0
            while not stop.is_set():
                n += 1
                never = f"198.19.0.{n % 250 + 1}"           # never logged in: never OK
                reply = ask(port, never)
                if reply == "action=OK":
                    wrong.append(never)
                if written:
                    reply = ask(port, written[len(written) // 2])
                    answers[{"action=OK": "OK", "action=DUNNO": "DUNNO"}.get(reply, "other")] += 1
                time.sleep(0.02)

        writer = threading.Thread(target=write)
        prober = threading.Thread(target=probe)
        writer.start()
        prober.start()
        time.sleep(4)
        cluster.kill_master()
        killed_at = len(written)
        writer.join(30)
        new_master = wait_for(lambda: (m := cluster.master()) != old_master and m, timeout=30,
                              what="the sentinels to promote the replica\n" + cluster.log())
        assert new_master == cluster.replica_port
        direct = redis.Redis(port=new_master)

        def all_in_new_master():
            return all(direct.exists(f"logkey:gate:{ip}") for ip in written)
        wait_for(all_in_new_master, timeout=60, step=0.5,
                 what="every gate in the promoted replica\n" + watch.log()[-3000:])
        wait_for(lambda: all(ask(port, ip) == "action=OK" for ip in written[-5:]), timeout=30,
                 what="the policy service to answer from the promoted replica\n" + policy.log())
        stop.set()
        prober.join(30)
        print({"logins": len(written), "killed_after": killed_at,
               "gates_in_new_master": sum(1 for ip in written if direct.exists(f"logkey:gate:{ip}")),
               "policy_answers_for_a_gated_ip": answers, "ok_without_gate": len(wrong)})
        assert wrong == []
        assert answers["other"] == 0 and answers["OK"] > 0
        for proc in (watch, policy):
            assert "Traceback" not in proc.log(), proc.log()[-3000:]
        assert "another server answers now" in watch.log() or \
            "store reachable again" in watch.log(), watch.log()[-3000:]
    finally:
        for r in running:
            r.stop()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False
