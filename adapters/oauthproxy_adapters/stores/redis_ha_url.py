"""The URLs of the replicated Redis stores: ``redis+sentinel://`` and ``redis+cluster://``, and
their TLS forms ``rediss+sentinel://`` and ``rediss+cluster://``.

Parsed here, without importing ``redis``, so that the configuration can be checked on a machine
without it. Both forms take several hosts, comma-separated, since a client must find the
deployment when any one of them is down::

    redis+sentinel://[[user]:password@]host[:26379][,host[:26379]...]/service[/db][?options]
    redis+cluster://[[user]:password@]host[:6379][,host[:6379]...][/0][?options]

The password (percent-encoded in the URL, or from ``[store] password_env``) is the data nodes':
the primary and replicas of a Sentinel service, every node of a Cluster; sentinels are reached
without one unless ``sentinel_auth=yes``. Options:

* ``prefix=`` starts every key, as with ``redis://`` (default ``oauthproxy:``); in a Cluster it
  may not contain ``{`` or ``}``, which would choose every key's hash slot (spec: the Cluster
  store places each record by its own hash tag);
* ``replicas=N`` (Sentinel: default 1; Cluster: default 0): every write is acknowledged only once
  N replicas have it (``WAIT``), so a fail-over to one of them cannot revive a code already
  redeemed; a Cluster whose shards have replicas should say ``replicas=1``;
* ``replica_timeout=S`` (seconds, default 0.5): how long a write waits for those replicas before
  the request gets a 503;
* ``sentinel_auth=yes`` (Sentinel only; default ``no``): the sentinels require the same user and
  password as the data nodes (``requirepass`` on the sentinels too, as many deployments set it);
* with ``rediss+``: ``ssl_ca_certs=FILE`` (the CA that signed the servers' certificates, when not
  one the system trusts), ``ssl_certfile=FILE`` and ``ssl_keyfile=FILE`` (a client certificate,
  for servers started with ``tls-auth-clients yes``).

With ``rediss+`` every connection is TLS: to the sentinels and to the data nodes, or to every
Cluster node. Each server's certificate is verified against the CA and must name the address the
client connects to (asked of redis-py explicitly; no option here turns it off): a sentinel or a
Cluster names its nodes by address, so their certificates carry those addresses.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote

import attrs

__all__ = [
    "DEFAULT_REPLICAS",
    "DEFAULT_REPLICA_TIMEOUT",
    "HA_SCHEMES",
    "TLS_VERIFICATION",
    "RedisHAURL",
    "parse_redis_ha_url",
]

#: The schemes of the replicated Redis stores (``rediss+``: the same over TLS).
HA_SCHEMES = ("redis+sentinel", "redis+cluster", "rediss+sentinel", "rediss+cluster")
#: What every TLS connection of the Redis stores asks of redis-py, whatever its defaults (before
#: 6.0 it did not check the host name): the server's certificate, verified, for the host connected
#: to. No store URL may change either.
TLS_VERIFICATION: dict[str, object] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
#: The TLS options a ``rediss+`` URL may carry (redis-py's names): files, read when connecting.
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")

#: Replicas that must hold a write before it is acknowledged (Sentinel; a Cluster's default is 0,
#: as a Cluster may have no replicas): one, the least that lets a fail-over keep every
#: acknowledged write, and what a primary-replica pair can always give.
DEFAULT_REPLICAS = 1
#: Seconds a write waits for them: a replica on the same network answers in a millisecond; half a
#: second rides out a busy replica without holding a request long when it is gone.
DEFAULT_REPLICA_TIMEOUT = 0.5

_DEFAULT_PORTS = {"redis+sentinel": 26379, "redis+cluster": 6379}


@attrs.frozen(repr=False)
class RedisHAURL:
    """A parsed ``redis+sentinel://`` or ``redis+cluster://`` URL (its repr shows no password).

    ``scheme`` names the topology (``redis+sentinel`` or ``redis+cluster``) whether or not the
    URL said ``rediss+``; ``tls`` says it did, and ``tls_files`` holds its TLS options."""

    scheme: str
    hosts: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None
    prefix: str
    replicas: int
    replica_timeout: float
    tls: bool = False
    tls_files: tuple[tuple[str, str], ...] = ()
    #: The sentinels take the data nodes' user and password (``sentinel_auth=yes``).
    sentinel_auth: bool = False

    def ssl_options(self) -> dict[str, object]:
        """redis-py's connection options for TLS (none without it): the certificate verified and
        its name checked, said explicitly (redis-py before 6.0 did not check the name)."""
        if not self.tls:
            return {}
        return {"ssl": True, **TLS_VERIFICATION, **dict(self.tls_files)}

    def __repr__(self) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        path = f"/{self.service}/{self.db}" if self.service else f"/{self.db}"
        scheme = self.scheme.replace("redis+", "rediss+") if self.tls else self.scheme
        return f"RedisHAURL({scheme}://{hosts}{path}, prefix={self.prefix!r})"


def _bad(url: str, problem: str) -> ValueError:
    # The URL is never quoted whole: it may hold a password.
    scheme = url.partition("://")[0]
    return ValueError(f"bad {scheme}:// store URL: {problem}")


def _hosts(url: str, netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    # No problem quotes what it found: a password holding `/`, `?` or `@` unencoded ends up in the
    # host, port or path part, and must not reach a message.
    hosts = []
    for n, item in enumerate((part.strip() for part in netloc.split(",")), 1):
        if item.startswith("["):  # an IPv6 address: [::1]:26379
            host, _, after = item[1:].partition("]")
            if after and not after.startswith(":"):
                raise _bad(url, f"host {n} is not a bracketed IPv6 address with a port")
            port = after[1:]
        else:
            host, _, port = item.partition(":")
        if not host:
            raise _bad(url, f"host {n} is empty")
        try:
            number = int(port) if port else default_port
        except ValueError:
            raise _bad(url, f"the port of host {n} is not a number") from None
        if not 0 < number < 65536:
            raise _bad(url, f"the port of host {n} is out of range")
        hosts.append((host, number))
    return tuple(hosts)


def parse_redis_ha_url(url: str) -> RedisHAURL:
    """Parse ``url`` (module docstring); raise ``ValueError`` naming what is wrong."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in HA_SCHEMES:
        raise ValueError(f"not a redis+sentinel:// or redis+cluster:// URL: {scheme!r}")
    tls = scheme.startswith("rediss+")
    scheme = scheme.replace("rediss+", "redis+")
    last_at = rest.rfind("@")
    ends = [i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0]
    if last_at >= 0 and ends and min(ends) < last_at:
        # An `@` after the host part: a password with an unencoded `/`, `?` or `#` (RFC 3986
        # §3.2.1). Nothing of the URL is quoted: every fragment of it may be the password's.
        raise _bad(url, "percent-encode the password: a / ? or # in it ends the host part")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostpart = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts = _hosts(url, hostpart, _DEFAULT_PORTS[scheme])
    segments = [s for s in path.split("/") if s] if path else []
    service = ""
    if scheme == "redis+sentinel":
        if not segments:
            raise _bad(url, "name the monitored service: redis+sentinel://host:26379/mymaster/0")
        service, segments = unquote(segments[0]), segments[1:]
    if len(segments) > 1:
        raise _bad(url, "unexpected path: more segments than the service and database")
    try:
        db = int(segments[0]) if segments else 0
    except ValueError:
        raise _bad(url, "the database is not a number") from None
    if db < 0 or (scheme == "redis+cluster" and db != 0):
        raise _bad(url, "a Redis Cluster has database 0 only" if db else "bad database number")
    replicas = DEFAULT_REPLICAS if scheme == "redis+sentinel" else 0
    prefix, timeout = "oauthproxy:", DEFAULT_REPLICA_TIMEOUT
    tls_files: dict[str, str] = {}
    sentinel_auth = False
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "prefix":
            if not value or any(c.isspace() for c in value):
                raise _bad(url, "the key prefix must be non-empty, no spaces")
            if scheme == "redis+cluster" and ("{" in value or "}" in value):
                raise _bad(url, "a Cluster key prefix may not contain { or } (hash tags)")
            prefix = value
        elif name in ("replicas", "replica_timeout"):
            try:
                number = float(value) if name == "replica_timeout" else int(value)
            except ValueError:
                raise _bad(url, f"{name}={value!r} is not a number") from None
            if number < 0 or (name == "replica_timeout" and not 0 < number <= 60):
                raise _bad(url, f"{name}={value!r} is out of range")
            if name == "replicas":
                replicas = int(number)
            else:
                timeout = number
        elif name == "sentinel_auth":
            if scheme != "redis+sentinel":
                raise _bad(url, "sentinel_auth is an option of redis+sentinel:// only")
            if value not in ("yes", "no"):
                raise _bad(url, f"sentinel_auth={value!r}: use yes or no")
            sentinel_auth = value == "yes"
        elif name in TLS_OPTIONS:
            if not tls:
                raise _bad(url, f"{name} is a TLS option: use rediss+{scheme[6:]}://")
            if not value or name in tls_files:
                raise _bad(url, f"{name} must name one file")
            tls_files[name] = value
        else:
            raise _bad(url, f"unknown option {name!r}")
    return RedisHAURL(
        scheme=scheme,
        hosts=hosts,
        service=service,
        db=db,
        username=username,
        password=password,
        prefix=prefix,
        replicas=replicas,
        replica_timeout=timeout,
        tls=tls,
        tls_files=tuple(sorted(tls_files.items())),
        sentinel_auth=sentinel_auth,
    )
