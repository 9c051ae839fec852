"""An HTTP handler on the host's own world (wit/platform.wit, spinhost:http@0.1.0).

The whole request arrives in one call and the whole response leaves in one value.
The world also imports key-value (wit_world.imports.wasi_keyvalue_store, atomics),
variables (wasi_config_store), SQLite (sqlite) and outbound HTTP (outgoing_handler);
the manifest's key_value_stores, variables, sqlite_databases and allowed_outbound_hosts
decide what they may reach. See the host's wit/README.md.
"""

from wit_world import exports
from wit_world.imports.types import Request, Response


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: Request) -> Response:
        return Response(
            status=200,
            headers=[("content-type", b"text/plain")],
            body=b"Hello from Python!\n",
        )
