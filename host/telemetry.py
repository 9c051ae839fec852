"""What a serving process reports about itself: Prometheus metrics and OpenTelemetry traces.

Started once per serving process (host/serve.py `serve_app`), before the app
loads, so host functions are wrapped for tracing as they are linked; the ASGI
wrappers go around the app where the access log does (`wrap`). Both are off by
default, and then nothing here is imported or installed: neither library is
loaded, and the request path is what it is without them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from host import __version__, tracing

if TYPE_CHECKING:
    from host.metrics import Metrics
    from host.redis_trigger import RedisTriggers
    from host.serve import Startup
    from host.server import HostApp


class Telemetry:
    def __init__(self, metrics: Metrics | None, traces: tracing.Tracing | None) -> None:
        self.metrics = metrics
        self.traces = traces

    @classmethod
    def start(cls, startup: Startup, report: Callable[[str], None]) -> Telemetry:
        """The metrics listener (a worker: its socket for the supervisor) and the tracer."""
        metrics = None
        address = startup.config.metrics_listen
        if address is not None:
            from host import metrics as prometheus

            metrics = (prometheus.serve_worker(startup.metrics_dir) if startup.metrics_dir
                       else prometheus.serve_process(address, report))
        return cls(metrics, tracing.start(os.environ, __version__))

    def wrap(self, app: Any, host_app: HostApp) -> Any:
        """`app` (the ASGI stack around `host_app`) with the request metrics and spans."""
        if self.metrics is not None:
            from host.metrics import RequestMetrics

            self.metrics.attach(host_app)
            app = RequestMetrics(app, self.metrics)
        if self.traces is not None:
            app = tracing.RequestTracing(app)
        return app

    def attach_triggers(self, triggers: RedisTriggers) -> None:
        """Count the Redis subscribers' messages in the metrics, when on."""
        if self.metrics is not None:
            self.metrics.attach_triggers(triggers)

    def close(self) -> None:
        """Send the spans still batched (the SDK would at interpreter exit too)."""
        if self.traces is not None:
            self.traces.close()
