"""`wasi:clocks/monotonic-clock`: host-defined because `subscribe-*` return pollables."""

from __future__ import annotations

import time

from host.wasip2.io import Deadline
from host.wasip2.resources import Functions, Tables

M = "wasi:clocks/monotonic-clock"


def functions(t: Tables) -> Functions:
    return {
        (M, "now"): lambda s: time.monotonic_ns(),
        (M, "resolution"): lambda s: 1,
        (M, "subscribe-instant"): lambda s, at: t.add("pollable", s, Deadline(at)),
        (M, "subscribe-duration"):
            lambda s, d: t.add("pollable", s, Deadline(time.monotonic_ns() + d)),
    }
