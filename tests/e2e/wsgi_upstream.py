"""A WSGI upstream (the standard library's wsgiref), for the tests of what
reaches an upstream. WSGI, like CGI and PHP, turns a header name into a
variable by upper-casing it and replacing `-` with `_`: `x_agentward_sub`
and `x-agentward-sub` both become HTTP_X_AGENTWARD_SUB, their values joined
by a comma. PATH_INFO is the percent-decoded path an application routes on.

Every request is recorded; the answer is the request as the application saw
it (method, PATH_INFO, QUERY_STRING, the raw request target, HTTP_*)."""

from __future__ import annotations

import json
import socketserver
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _Handler(WSGIRequestHandler):
    def get_environ(self):
        env = super().get_environ()
        env["agentward.request_target"] = self.path
        return env

    def log_message(self, *args) -> None:
        pass


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class WsgiUpstream:
    """`start()` serves on a free loopback port; `seen` lists the requests."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self._lock = threading.Lock()
        self._server = make_server(
            "127.0.0.1", 0, self._app, server_class=_ThreadingWSGIServer, handler_class=_Handler
        )

    @property
    def port(self) -> int:
        return self._server.server_port

    def start(self) -> "WsgiUpstream":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    def requests_with(self, probe: str) -> list[dict]:
        """The requests that carried `x-probe: <probe>`."""
        with self._lock:
            return [s for s in self.seen if s["environ"].get("HTTP_X_PROBE") == probe]

    def _app(self, environ, start_response):
        seen = {
            "method": environ["REQUEST_METHOD"],
            "path_info": environ.get("PATH_INFO", ""),
            "query_string": environ.get("QUERY_STRING", ""),
            "request_target": environ.get("agentward.request_target", ""),
            "environ": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
        }
        with self._lock:
            self.seen.append(seen)
        body = json.dumps(seen).encode()
        start_response("200 OK", [("content-type", "application/json"), ("content-length", str(len(body)))])
        return [] if seen["method"] == "HEAD" else [body]
