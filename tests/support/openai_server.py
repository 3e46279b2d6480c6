"""A local OpenAI-compatible HTTP server for the tests: real embeddings, injectable faults.

`/v1/embeddings` embeds with the real all-MiniLM-L6-v2, so search quality in tests is real.
Markers inside an input text make the whole request misbehave, for exercising failure paths:
  @@fail429:TAG:N@@  the first N requests carrying TAG get 429 (Retry-After: 0)
  @@fail500:TAG:N@@  the same with 500
  @@reject@@         400 (a permanent rejection)
  @@slow:SECONDS@@   answer after SECONDS
Run: python -m tests.support.openai_server --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections import Counter

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

MARKER = re.compile(r"@@(fail429|fail500|reject|slow)(?::([^:@]+))?(?::([^@]+))?@@")


def build_app() -> FastAPI:
    from core.embedder import LocalModel
    from core.settings import get_settings

    model = LocalModel(get_settings())
    model.load()
    failures: Counter[str] = Counter()
    app = FastAPI()
    stats = {"embedding_requests": 0, "embedded_texts": 0}
    served: list[list[str]] = []

    @app.get("/stats")
    async def get_stats(contains: str | None = None) -> dict:
        """Totals, or with `contains`: how many calls and texts carried that tag (other tests' work excluded)."""
        if contains is None:
            return stats
        calls = [texts for texts in served if any(contains in t for t in texts)]
        return {"embedding_requests": len(calls), "embedded_texts": sum(contains in t for c in calls for t in c)}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await request.json()
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        for kind, tag, arg in MARKER.findall(" ".join(texts)):
            if kind == "reject":
                return JSONResponse({"error": {"message": "rejected by test marker", "type": "invalid_request_error"}},
                                    status_code=400)
            if kind == "slow":
                await asyncio.sleep(float(tag))
            if kind in ("fail429", "fail500"):
                failures[tag] += 1
                if failures[tag] <= int(arg):
                    status = 429 if kind == "fail429" else 500
                    return JSONResponse({"error": {"message": f"injected {status}", "type": "server_error"}},
                                        status_code=status, headers={"Retry-After": "0"})
        stats["embedding_requests"] += 1
        stats["embedded_texts"] += len(texts)
        served.append(texts)
        del served[:-5000]
        vectors = await model.encode(texts)
        return {"object": "list", "model": body.get("model", "test"),
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": sum(len(t.split()) for t in texts), "total_tokens": 0}}

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True, "time": time.time()}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
