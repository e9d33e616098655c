"""Replicated Redis deployments on loopback, started by the tests: a Sentinel-monitored primary
with its replica and three sentinels, and a Cluster of three primaries.

Every process is a real ``redis-server`` (``--sentinel`` for a sentinel: the ``redis-sentinel``
command is that binary under another name, and Debian ships it in a separate package), bound to
127.0.0.1 on free ports, in its own directory under the test's temporary directory, and stopped,
killed, paused or resumed by its PID only. Given ``tls`` (a CA and a certificate for 127.0.0.1),
every process listens with TLS only, and replication, the sentinels' connections and the Cluster
bus use TLS too. A missing ``redis-server`` or ``redis-cli`` fails the
test (``sh .ci/dev test`` installs them): a replicated store must not pass CI untested. No pytest
here: ``benchmarks/stores_flow.py`` starts the same deployments.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import redis
from redis.crc import key_slot

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
SERVICE = "mymaster"


def _require(binary: str | None, name: str) -> str:
    if binary is None:
        raise RuntimeError(
            f"{name} is required for the replicated Redis stores' tests and benchmark "
            "(sh .ci/dev test installs it)"
        )
    return binary


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, bus: bool = False) -> list[int]:
    """``count`` free loopback ports; with ``bus``, each with ``port + 10000`` free too (a Cluster
    node's bus)."""
    found: list[int] = []
    rng = random.Random()
    while len(found) < count:
        port = rng.randrange(20000, 30000) if bus else rng.randrange(30000, 60000)
        if port in found or not _port_free(port) or (bus and not _port_free(port + 10000)):
            continue
        found.append(port)
    return found


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.1)


@attrs.frozen
class TlsFiles:
    """What a TLS deployment's servers and clients are given: the CA, and the servers' certificate
    (one for every process: all of them are 127.0.0.1)."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_args(self, port: int, *, cluster: bool) -> tuple[str, ...]:
        args = (
            *("--port", "0", "--tls-port", str(port)),
            *("--tls-cert-file", str(self.cert_file), "--tls-key-file", str(self.key_file)),
            *("--tls-ca-cert-file", str(self.ca_file), "--tls-auth-clients", "no"),
            *("--tls-replication", "yes"),
        )
        return (*args, "--tls-cluster", "yes") if cluster else args

    def client_options(self) -> dict[str, Any]:
        return {"ssl": True, "ssl_ca_certs": str(self.ca_file)}

    def query(self) -> str:
        return "ssl_ca_certs=" + quote(str(self.ca_file), safe="")


class RedisProcess:
    """One ``redis-server`` (or sentinel) on 127.0.0.1:``port``, run from ``workdir``."""

    def __init__(
        self,
        port: int,
        workdir: Path,
        args: Sequence[str] = (),
        password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.port = port
        self.workdir = workdir
        self.args = tuple(args)
        self.password = password
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, head: Sequence[str] = ()) -> None:
        binary = _require(REDIS_SERVER, "redis-server")
        cluster = "--cluster-enabled" in self.args
        listen = (
            ("--port", str(self.port))
            if self.tls is None
            else self.tls.server_args(self.port, cluster=cluster)
        )
        self.proc = subprocess.Popen(
            [
                binary,
                *head,
                "--bind",
                "127.0.0.1",
                *listen,
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "no",
                # A replica (re)joining syncs at once rather than after the default 5 s.
                "--repl-diskless-sync-delay",
                "0",
                *self.args,
            ],
            cwd=self.workdir,
            stdout=(self.workdir / "out.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self.pings, f"redis-server on port {self.port}", 15)
        except BaseException:
            self.stop()  # by its PID: a server that never answered is not left behind
            raise

    def client(self, **kwargs: Any) -> redis.Redis:
        kwargs.setdefault("password", self.password)
        if self.tls is not None:
            kwargs = {**self.tls.client_options(), **kwargs}
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, **kwargs)

    def pings(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"redis-server on port {self.port} exited: see {self.workdir}")
        # Ready is ready whatever names the certificate carries (a test may give it others).
        options = {} if self.tls is None else {"ssl_check_hostname": False}
        with self.client(**options) as c:
            return bool(c.ping())

    def kill(self) -> None:
        """SIGKILL, as a crashed host: nothing is flushed or handed over."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a paused process cannot act on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class SentinelSet:
    """A primary, ``replicas`` replicas and three sentinels watching them as ``mymaster``
    (quorum 2, a primary is down after ``down_after_ms`` without answering)."""

    def __init__(
        self,
        root: Path,
        *,
        replicas: int = 1,
        down_after_ms: int = 1000,
        password: str | None = None,
        tls: TlsFiles | None = None,
        sentinel_auth: bool = False,
    ) -> None:
        ports = free_ports(1 + replicas + 3)
        #: The sentinels require ``password`` too (and give it to each other).
        self.sentinel_auth = sentinel_auth and password is not None
        auth = ("--requirepass", password, "--masterauth", password) if password else ()
        self.password = password
        self.tls = tls
        self.servers = [RedisProcess(ports[0], root / "primary", auth, password, tls)]
        for i, port in enumerate(ports[1 : 1 + replicas]):
            self.servers.append(
                RedisProcess(
                    port,
                    root / f"replica{i}",
                    ("--replicaof", "127.0.0.1", str(ports[0]), *auth),
                    password,
                    tls,
                )
            )
        sentinel_password = password if self.sentinel_auth else None
        self.sentinels = [
            RedisProcess(port, root / f"sentinel{i}", password=sentinel_password, tls=tls)
            for i, port in enumerate(ports[-3:])
        ]
        self.down_after_ms = down_after_ms

    def start(self) -> SentinelSet:
        for server in self.servers:
            server.start()
        primary = self.servers[0].port
        for sentinel in self.sentinels:
            conf = sentinel.workdir / "sentinel.conf"
            conf.write_text(
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 4000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
                + (f"sentinel auth-pass {SERVICE} {self.password}\n" if self.password else "")
                + (
                    f"requirepass {self.password}\nsentinel sentinel-pass {self.password}\n"
                    if self.sentinel_auth
                    else ""
                )
            )
            # Options given after the file are appended to it: the sentinel rewrites the file.
            sentinel.start(head=(str(conf), "--sentinel"))
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Every replica in sync with the primary, every sentinel knowing the replicas and the
        other two sentinels (a fail-over needs them)."""
        replicas = len(self.servers) - 1
        wait_until(
            lambda: (
                self.primary().client().info("replication")["connected_slaves"] == replicas
                and all(
                    s.client().info("replication").get("master_link_status") == "up"
                    for s in self.servers
                    if s is not self.primary()
                )
            ),
            "replicas in sync",
        )

        def acknowledged() -> bool:
            # A replica whose link is up may take most of a second to acknowledge its primary's
            # first write: a write and WAIT here, so that a store's first write does not.
            with self.primary().client() as c:
                c.set("probe", b"1", ex=60)
                return int(c.execute_command("WAIT", replicas, 2000)) >= replicas

        wait_until(acknowledged, "the replicas to acknowledge a write")

        def sentinels_agree() -> bool:
            for sentinel in self.sentinels:
                with sentinel.client() as c:
                    known = c.execute_command("SENTINEL", "REPLICAS", SERVICE)
                    others = c.execute_command("SENTINEL", "SENTINELS", SERVICE)
                    if len(known) < replicas or len(others) < 2:
                        return False
            return True

        wait_until(sentinels_agree, "sentinels to discover the replicas and each other")

    def sentinel_hosts(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def url(self, prefix: str, *, db: int = 0, query: str = "", password: bool = True) -> str:
        extra = f"&{query}" if query else ""
        auth = f":{self.password}@" if self.password and password else ""
        hosts = self.sentinel_hosts()
        if self.tls is not None:
            extra += "&" + self.tls.query()
        scheme = "redis+sentinel" if self.tls is None else "rediss+sentinel"
        return f"{scheme}://{auth}{hosts}/{SERVICE}/{db}?prefix={prefix}{extra}"

    def primary_address(self) -> tuple[str, int]:
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as c:
                    host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                    return host.decode(), int(port)
            except redis.RedisError:
                continue
        raise AssertionError("no sentinel answers")

    def agreed_primary(self) -> int | None:
        """The primary's port if every sentinel names the same one, else ``None``."""
        ports = set()
        for sentinel in self.sentinels:
            with sentinel.client() as c:
                _host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                ports.add(int(port))
        return ports.pop() if len(ports) == 1 else None

    def primary(self) -> RedisProcess:
        port = self.primary_address()[1]
        return next(s for s in self.servers if s.port == port)

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.stop()


class ClusterSet:
    """``primaries`` cluster-enabled ``redis-server`` processes joined into one Cluster by
    ``redis-cli --cluster create`` (every slot covered), each with ``replicas`` replicas."""

    def __init__(
        self,
        root: Path,
        *,
        primaries: int = 3,
        replicas: int = 0,
        password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.replicas = replicas
        auth = ("--requirepass", password, "--masterauth", password) if password else ()
        self.password = password
        self.tls = tls
        self.nodes = [
            RedisProcess(
                port,
                root / f"node{i}",
                (
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    *auth,
                ),
                password,
                tls,
            )
            for i, port in enumerate(free_ports(primaries * (1 + replicas), bus=True))
        ]

    def start(self) -> ClusterSet:
        cli = _require(REDIS_CLI, "redis-cli")
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-yes"]
            + ["--cluster-replicas", str(self.replicas)]
            + (["-a", self.password, "--no-auth-warning"] if self.password else [])
            + (["--tls", "--cacert", str(self.tls.ca_file)] if self.tls is not None else []),
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_until(
            lambda: all(
                n.client().execute_command("CLUSTER", "INFO").decode().count("cluster_state:ok")
                for n in self.nodes
            ),
            "the cluster to cover every slot",
        )
        self.wait_replicas()
        return self

    def wait_replicas(self) -> None:
        """Every primary has its replicas connected and acknowledging (and every node agrees the
        cluster is ok). A replica whose link is up may still take most of a second to acknowledge
        its primary's first write: ``WAIT`` here, so that a store's first write does not."""

        def synced() -> bool:
            for node in self.nodes:
                if node.proc is None or node.proc.poll() is not None:
                    continue
                with node.client() as c:
                    info = c.info("replication")
                    state = c.execute_command("CLUSTER", "INFO").decode()
                    primary = info["role"] == "master"
                    if primary and self.replicas and info["connected_slaves"] >= self.replicas:
                        c.set(self._probe_key(c, node.port), b"1", ex=60)
                        acked = int(c.execute_command("WAIT", self.replicas, 2000))
                        if acked < self.replicas:
                            return False
                if "cluster_state:ok" not in state:
                    return False
                if info["role"] == "master" and info["connected_slaves"] < self.replicas:
                    return False
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
            return True

        wait_until(synced, "every primary's replicas")

    @staticmethod
    def _probe_key(c: redis.Redis, port: int) -> str:
        """A key in a slot the primary on ``port`` serves (``c`` is connected to it)."""
        for start, end, master, *_rest in c.execute_command("CLUSTER", "SLOTS"):
            if int(master[1]) == port:
                n = 0
                while not start <= key_slot(f"probe-{n}".encode()) <= end:
                    n += 1
                return f"probe-{n}"
        raise AssertionError(f"the primary on port {port} serves no slot")

    def node_of(self, key: str | bytes) -> RedisProcess:
        """The node serving ``key``'s slot as a primary now."""
        slot = self.keyslot(key)
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            with node.client() as c:
                if c.info("replication")["role"] != "master":
                    continue
                for start, end, *_rest in c.execute_command("CLUSTER", "SLOTS"):
                    master = _rest[0]
                    if start <= slot <= end and int(master[1]) == node.port:
                        return node
        raise AssertionError(f"no primary serves slot {slot}")

    def replica_of(self, primary: RedisProcess) -> RedisProcess:
        with primary.client() as c:
            port = int(c.info("replication")["slave0"]["port"])
        return next(n for n in self.nodes if n.port == port)

    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def url(self, prefix: str, *, query: str = "", password: bool = True) -> str:
        extra = f"&{query}" if query else ""
        auth = f":{self.password}@" if self.password and password else ""
        if self.tls is not None:
            extra += "&" + self.tls.query()
        scheme = "redis+cluster" if self.tls is None else "rediss+cluster"
        return f"{scheme}://{auth}{self.hosts()}/0?prefix={prefix}{extra}"

    def keyslot(self, key: str | bytes) -> int:
        """The slot the server computes for ``key`` (``CLUSTER KEYSLOT``)."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                with node.client() as c:
                    return int(c.execute_command("CLUSTER", "KEYSLOT", key))
        raise AssertionError("no node runs")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
