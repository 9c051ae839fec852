"""`wasi:sockets`: denied, with the interfaces' own error codes."""

from __future__ import annotations

from host.runtime.marshal import Err
from host.wasip2.resources import Functions, Tables


def functions(t: Tables) -> Functions:
    return {
        ("wasi:sockets/instance-network", "instance-network"):
            lambda s: t.add("network", s, None),
        ("wasi:sockets/tcp-create-socket", "create-tcp-socket"):
            lambda s, family: Err("access-denied"),
        ("wasi:sockets/udp-create-socket", "create-udp-socket"):
            lambda s, family: Err("access-denied"),
        ("wasi:sockets/ip-name-lookup", "resolve-addresses"):
            lambda s, network, name: Err("permanent-resolver-failure"),
    }
