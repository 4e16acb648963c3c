"""A cluster address checked before Ray sees it: its syntax, then whether something Ray-like answers there.

Ray itself, given a bad address, raises a bare ValueError from deep inside `ray.init` (a 30-line traceback),
and given an address where no GCS answers it retries for a minute or more while its C++ client prints
warnings straight to the terminal; its retry limits are read from the environment when Ray is imported,
too early for us to bound them per call. So we parse the address ourselves, then make one gRPC call of the
kind Ray's own client makes first, with a deadline of a few seconds: a refused port, a port that accepts but
never speaks, and a server that speaks something other than gRPC each fail in one line.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

PROBE_TIMEOUT_S = 3.0
SCHEMES = ("", "ray")
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
WHAT = {"": "a Ray GCS", "ray": "a Ray Client server"}


class AddressError(ValueError):
    """An address that is malformed or where no Ray answers; the message is one line naming it."""


@dataclass(frozen=True)
class Address:
    scheme: str   # "" for a GCS host:port, "ray" for a Ray Client server
    host: str
    port: int
    label: str    # how the user gave it, for messages: "--address x:1", "RAY_ADDRESS x:1"

    @property
    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def for_ray(self) -> str:
        return f"ray://{self.hostport}" if self.scheme else self.hostport


def parse(address: str, label: str) -> Address:
    """`host:port`, `[v6]:port` or `ray://host:port`, else AddressError saying what is wrong."""
    def bad(why: str) -> AddressError:
        return AddressError(f"{label}: {why}")

    text = address.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    scheme = scheme.lower()
    if scheme in ("http", "https"):
        raise bad("an http address is the dashboard's job API: use it with --detach, or give the cluster's "
                  "GCS address as host:port")
    if scheme not in SCHEMES:
        raise bad(f"unknown scheme {scheme!r}: give host:port (the GCS) or ray://host:port (Ray Client)")
    if text == "local":
        raise bad("'local' starts a new cluster: leave the address out for a private local cluster")
    if any(c in rest for c in "/?#@ \t"):
        raise bad("expected host:port with nothing else (no path, user or spaces)")
    if rest.startswith("["):
        host, close, tail = rest[1:].partition("]")
        if not close or not tail.startswith(":"):
            raise bad("expected [IPv6 address]:port")
        port_text = tail[1:]
        try:
            socket.inet_pton(socket.AF_INET6, host)
        except OSError:
            raise bad(f"{host!r} is not an IPv6 address") from None
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon:
            raise bad("no port: expected host:port")
        if ":" in host:
            raise bad("an IPv6 address needs brackets: [address]:port")
        if not host:
            raise bad("no host before the port: expected host:port")
        if not _HOSTNAME.match(host):
            raise bad(f"{host!r} is not a host name or IP address")
    if not port_text:
        raise bad("no port after the colon: expected host:port")
    if not port_text.isdigit():
        raise bad(f"port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise bad(f"port {port} is out of range (1-65535)")
    return Address(scheme, host, port, label)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def probe(address: Address, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """AddressError unless a Ray GCS (or, for ray://, a Ray Client server) answers within `timeout_s` each
    for the TCP connection and for the first gRPC call."""
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout_s):
            pass
    except TimeoutError:
        raise AddressError(f"{address.label}: no answer from {address.hostport} within {timeout_s:g} s") from None
    except OSError as err:
        raise AddressError(f"{address.label}: cannot reach {address.hostport} ({err.strerror or err})") from None
    _first_call(address, timeout_s)


def _first_call(address: Address, timeout_s: float) -> None:
    import grpc  # Ray's own dependency; imported here so that only joining a cluster pays for it

    method, request = _first_request(address.scheme)
    what = WHAT[address.scheme]
    # Straight to the address, like the TCP check: an http_proxy in the environment is not the cluster.
    channel = grpc.insecure_channel(address.hostport, options=[("grpc.enable_http_proxy", 0)])
    token_mode, metadata = _auth()
    try:
        channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                            response_deserializer=lambda b: b)(request, timeout=timeout_s, metadata=metadata)
    except grpc.RpcError as err:
        code = err.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise AddressError(f"{address.label}: {address.hostport} accepts connections but does not answer "
                               f"like {what} within {timeout_s:g} s") from None
        if code == grpc.StatusCode.UNIMPLEMENTED:
            raise AddressError(f"{address.label}: {address.hostport} speaks gRPC but is not {what}") from None
        if code == grpc.StatusCode.UNAVAILABLE:
            raise AddressError(f"{address.label}: {address.hostport} answers, but not like {what} "
                               f"({_one_line(err.details())})") from None
        if code == grpc.StatusCode.UNAUTHENTICATED:
            raise AddressError(f"{address.label}: {_auth_advice(token_mode, bool(metadata))}") from None
        # Anything else (INVALID_ARGUMENT, INTERNAL...) came from the method itself: it is there.
    finally:
        channel.close()


_TOKEN_PLACES = "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"


def _auth() -> tuple[bool, tuple]:
    """(whether Ray will send a token, the gRPC metadata it will send): a driver joining by address sends
    Ray's token only when RAY_AUTH_MODE=token, so the probe does the same and meets the same answer."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:  # a Ray without token authentication
        return False, ()
    if not is_token_auth_enabled():
        return False, ()
    loader = AuthenticationTokenLoader.instance()
    if not loader.has_token():
        return True, ()
    return True, tuple(loader.get_token_for_http_header().items())


def _auth_advice(token_mode: bool, sent: bool) -> str:
    if not token_mode:
        return (f"the cluster requires Ray's auth token: set RAY_AUTH_MODE=token (Ray then reads the token "
                f"from {_TOKEN_PLACES})")
    if not sent:
        return f"RAY_AUTH_MODE=token but no token was found (set {_TOKEN_PLACES})"
    return f"the cluster rejected the auth token (is it this cluster's? it comes from {_TOKEN_PLACES})"


def _first_request(scheme: str):
    """The first call Ray's own client makes: the GCS's cluster id, or the Ray Client server's ping."""
    if scheme == "ray":
        from ray.core.generated import ray_client_pb2

        return "/ray.rpc.RayletDriver/ClusterInfo", ray_client_pb2.ClusterInfoRequest(
            type=ray_client_pb2.ClusterInfoType.PING)
    from ray.core.generated import gcs_service_pb2

    return "/ray.rpc.NodeInfoGcsService/GetClusterId", gcs_service_pb2.GetClusterIdRequest()


def _one_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else "no detail"
