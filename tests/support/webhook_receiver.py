"""The tests' webhook receiver: a real HTTP server that checks each delivery's Standard Webhooks signature with
its own implementation (not the service's), records what came, and answers as each path is scripted to."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOLERANCE_SECONDS = 300


def verify(secret: str, headers: dict[str, str], body: bytes, *, now: float | None = None) -> bool:
    """Whether a delivery is authentic: one `v1,` signature of `{id}.{timestamp}.{body}` matches, with a fresh
    timestamp (the Standard Webhooks receiver's steps)."""
    msg_id, stamp, signatures = (headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signatures and secret.startswith("whsec_")):
        return False
    try:
        if abs((now or time.time()) - int(stamp)) > TOLERANCE_SECONDS:
            return False
        key = base64.b64decode(secret[len("whsec_"):], validate=True)
    except ValueError:
        return False
    expected = base64.b64encode(hmac.new(key, msg_id.encode() + b"." + stamp.encode() + b"." + body,
                                         hashlib.sha256).digest())
    for entry in signatures.split(" "):
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(sig.encode(), expected):
            return True
    return False


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Deliveries by path; `script(path, secret, statuses)` says how a path answers (the last status repeats)."""

    port: int
    deliveries: dict[str, list[Delivery]] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, list[int]] = field(default_factory=dict)
    # Per path, what else an answer does: {"location": …, "body": bytes, "delay": seconds before answering}.
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)
    server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, secret: str, statuses: list[int] | None = None, **extras: Any) -> None:
        with self.changed:
            self.secrets[path], self.statuses[path] = secret, list(statuses or [200])
            self.extras[path] = extras

    def received(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        with self.changed:
            secret = self.secrets.get(path, "")
            self.deliveries.setdefault(path, []).append(Delivery(path, headers, body, verify(secret, headers, body)))
            plan = self.statuses.get(path, [404])
            status = plan.pop(0) if len(plan) > 1 else plan[0]
            self.changed.notify_all()
            return status

    def wait_for(self, path: str, count: int, timeout: float = 60) -> list[Delivery]:
        """The path's first `count` deliveries, once they came (AssertionError at the deadline)."""
        with self.changed:
            arrived = self.changed.wait_for(lambda: len(self.deliveries.get(path, [])) >= count, timeout=timeout)
            got = list(self.deliveries.get(path, []))
        assert arrived, f"{len(got)} of {count} deliveries to {path} arrived"
        return got[:count]

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status = receiver.received(self.path, body, {k.lower(): v for k, v in self.headers.items()})
                extras = receiver.extras.get(self.path, {})
                if extras.get("delay"):
                    time.sleep(extras["delay"])  # a receiver that is slow to answer
                answer = extras.get("body") or json.dumps({"received": True, "status": status}).encode()
                self.send_response(status)
                if extras.get("location"):
                    self.send_header("location", extras["location"])
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
