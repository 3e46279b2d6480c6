"""A local stand-in for SearxNG's JSON API, for the `web_search` tests: `GET /search?q=…&format=json`.

It answers `{"query", "number_of_results", "results": [{"title", "url", "content", "engine"}, …]}`, with
as many results as the query's `@@results:N@@` marker says (default 3). Other markers in the query
make it misbehave:
  @@fail500:TAG:N@@  the first N requests carrying TAG get a 500
  @@hang@@           no answer for a minute (a client's timeout fires first)
  @@notjson@@        200 with an HTML page
  @@status:CODE@@    that status with an empty JSON object
Without `format=json` it answers 403, as SearxNG does when the JSON format is not enabled.
`FakeSearx.count(S)`: how many search requests carried S. Runs in a thread of the test process
(`FakeSearx().start()`), on a free port of 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MARKER = re.compile(r"@@(\w+)(?::([^@]*))?@@")


class FakeSearx:
    """The server and what it has seen."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.queries: list[str] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                fake.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True  # a hanging answer never holds the test process at exit

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> FakeSearx:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, contains: str) -> int:
        with self.lock:
            return sum(1 for q in self.queries if contains in q)

    def _send(self, handler: BaseHTTPRequestHandler, status: int, body: bytes, kind: str = "application/json") -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path != "/search":
            self._send(handler, 404, b"{}")
            return
        if params.get("format") != "json":
            self._send(handler, 403, b"<html>Forbidden</html>", "text/html")
            return
        query = params.get("q", "")
        with self.lock:
            self.queries.append(query)
        markers = {name: value for name, value in MARKER.findall(query)}
        if "fail500" in markers:
            tag, _, times = markers["fail500"].partition(":")
            with self.lock:
                self.seen[tag] += 1
                failing = self.seen[tag] <= int(times or 1)
            if failing:
                self._send(handler, 500, b'{"error": "injected"}')
                return
        if "hang" in markers:
            time.sleep(60)
            return
        if "notjson" in markers:
            self._send(handler, 200, b"<html>not json</html>", "text/html")
            return
        if "status" in markers:
            self._send(handler, int(markers["status"]), b"{}")
            return
        n = int(markers.get("results") or 3)
        text = MARKER.sub("", query).strip()
        results = [{"title": f"Result {i} for {text}", "url": f"https://example.org/{i}",
                    "content": f"Snippet {i} about {text}.", "engine": "fake", "score": 1.0 / (i + 1)}
                   for i in range(n)]
        results.insert(1, {"title": "no url", "content": "a result without a URL is left out"})
        self._send(handler, 200, json.dumps({"query": query, "number_of_results": n, "results": results}).encode())
