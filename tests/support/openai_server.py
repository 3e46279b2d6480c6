"""A local OpenAI-compatible HTTP server for the tests: real embeddings, scripted chat, injectable faults.

Embeddings — `POST /v1/embeddings` embeds with the real all-MiniLM-L6-v2, so search quality in tests
is real. Markers inside an input text make the whole request misbehave, for exercising failure paths:
  @@fail429:TAG:N@@  the first N requests carrying TAG get 429 (Retry-After: 0)
  @@fail500:TAG:N@@  the same with 500
  @@reject@@         400 (a permanent rejection)
  @@slow:SECONDS@@   answer after SECONDS
A model name starting with `reversed` stands for another embedding model: the same vectors, their
components in reverse order (as good for search, useless compared with the first model's). One starting
with `doubled` stands for a model of twice the dimension (768): each vector written twice over, scaled back
to unit length (the same cosines as the first model's).

Chat — `POST /v1/chat/completions`, non-streaming, or streaming with `"stream": true` (SSE chunks as
OpenAI sends them: a first chunk with the role; the content, a word with its surrounding whitespace
per chunk; each tool call as a chunk with its index, id and name, then its arguments in pieces of at
most 8 characters; a last chunk with `finish_reason`; a chunk with `usage` and no choices when
`stream_options.include_usage`; then `data: [DONE]`). Errors and delays come before the stream starts.

  Scripts. `POST /scripts {"marker": "M", "responses": [R, ...]}` appends responses to M's queue
  (answer: `{"marker", "queued"}`, the queue's length). A chat request whose message text (every
  message's content, and tool-call arguments) contains M takes the next R off the queue; when several
  scripted markers match, the first one scripted that has responses left wins. Each R is one of:
    {"content": "text"}                                   an assistant message, finish_reason "stop"
    {"tool_calls": [{"name": "f", "arguments": {...}}]}   tool calls (arguments: an object, or a string
                                                          sent as is, e.g. broken JSON); ids call_1,
                                                          call_2, … (one counter per server);
                                                          finish_reason "tool_calls"
    {"status": 429, "retry_after": 2}                     that HTTP status with an OpenAI-style error
                                                          body; `retry_after` (seconds, or an HTTP-date
                                                          string) becomes the Retry-After header
    {"status": 500} / {"status": 401} / any status        the same without Retry-After
    {"status": 307, "location": "http://…"}               a redirect there (with the same error body)
    {"delay": 1.5, ...}                                   wait that long first, then answer with the rest
                                                          of R (or the default answer if nothing is left)
    {"chunk_delay": 0.2, ...}                             streaming: wait that long before each content chunk
    {"tool_call_ids": "every" | "none", ...}              streaming: repeat each call's id on every chunk of
                                                          it, or send no ids at all (default: first chunk only)
  "content" and "tool_calls" may be combined; "finish_reason" overrides the finish reason.
  `GET /scripts/{marker}` → `{"marker", "remaining"}`; `DELETE /scripts/{marker}` drops the queue.

  Default answer (no script matches, or the queue is empty): with `response_format` of type
  `json_object` or `json_schema` the content is `{}`; otherwise it is `echo: ` followed by the text of
  the last user message. Tools are never called by default.

  Usage: prompt_tokens = words in all messages' text, completion_tokens = words in the answer's content
  plus its tool-call arguments (words: whitespace-separated).

Stats — `GET /stats` → totals: embedding_requests, embedded_texts, chat_requests. `GET /stats?contains=S`
counts only requests carrying S (in an embedded text, or in a chat request's message text):
embedding_requests, embedded_texts, chat_requests (every chat request, however it was answered), and
chat_max_in_flight (the most chat requests carrying S being served at one moment, each from its
arrival until its answer is ready; for a stream, until its last chunk). `GET /chat/requests?contains=S`
→ the JSON bodies of the chat requests carrying S (all of them without `contains`), oldest first; the
last 5,000 chat requests are kept.

Run: python -m tests.support.openai_server --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import time
from collections import Counter, deque
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

MARKER = re.compile(r"@@(fail429|fail500|reject|slow)(?::([^:@]+))?(?::([^@]+))?@@")
ARGUMENT_PIECE = 8  # characters of tool-call arguments per streamed chunk


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def message_text(messages: list[dict]) -> str:
    """Everything a chat request says: each message's content and tool-call arguments."""
    parts = []
    for message in messages:
        parts.append(_content_text(message.get("content")))
        parts.extend((call.get("function") or {}).get("arguments") or "" for call in message.get("tool_calls") or [])
    return "\n".join(parts)


def _words(text: str) -> int:
    return len(text.split())


class ChatLog:
    """The last chat requests: their text, body, and when each was being served (for in-flight counts)."""

    def __init__(self) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=5000)

    def start(self, text: str, body: dict) -> dict[str, Any]:
        entry = {"text": text, "body": body, "start": time.monotonic(), "end": None}
        self.entries.append(entry)
        return entry

    def matching(self, contains: str | None) -> list[dict[str, Any]]:
        return [e for e in self.entries if contains is None or contains in e["text"]]

    def max_in_flight(self, contains: str | None) -> int:
        edges = []
        for entry in self.matching(contains):
            edges.append((entry["start"], 1))
            edges.append((entry["end"] if entry["end"] is not None else float("inf"), -1))
        most = current = 0
        for _, step in sorted(edges):  # at equal times an end (-1) sorts before a start
            current += step
            most = max(most, current)
        return most


class Scripts:
    """Queues of scripted chat answers, keyed by marker, in the order markers were first scripted."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[dict]] = {}

    def add(self, marker: str, responses: list[dict]) -> int:
        queue = self.queues.setdefault(marker, deque())
        queue.extend(responses)
        return len(queue)

    def take(self, text: str) -> dict | None:
        for marker, queue in self.queues.items():
            if marker in text and queue:
                return queue.popleft()
        return None


def _answer(body: dict, script: dict, text: str, ids: itertools.count) -> dict[str, Any]:
    """Content, tool calls, finish reason and usage of a chat answer (scripted, else the default)."""
    messages = body.get("messages") or []
    if "content" in script or "tool_calls" in script:
        content = script.get("content")
    elif (body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        content = "{}"
    else:
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        content = "echo: " + _content_text(last_user.get("content"))
    calls = [{"id": f"call_{next(ids)}", "name": call["name"],
              "arguments": call["arguments"] if isinstance(call.get("arguments"), str)
              else json.dumps(call.get("arguments") or {})} for call in script.get("tool_calls") or []]
    completion = _words(content or "") + sum(_words(c["arguments"]) for c in calls)
    return {"content": content, "tool_calls": calls, "chunk_delay": float(script.get("chunk_delay") or 0),
            "tool_call_ids": script.get("tool_call_ids") or "first",
            "finish_reason": script.get("finish_reason") or ("tool_calls" if calls else "stop"),
            "usage": {"prompt_tokens": _words(text), "completion_tokens": completion,
                      "total_tokens": _words(text) + completion}}


def _wire_calls(calls: list[dict]) -> list[dict]:
    return [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls]


def _completion(body: dict, answer: dict, completion_id: str) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": answer["content"]}
    if answer["tool_calls"]:
        message["tool_calls"] = _wire_calls(answer["tool_calls"])
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "test"), "usage": answer["usage"],
            "choices": [{"index": 0, "message": message, "finish_reason": answer["finish_reason"], "logprobs": None}]}


async def _chunks(body: dict, answer: dict, completion_id: str, entry: dict):
    """The answer as OpenAI's SSE chunks; the request stops being in flight after the last one."""
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body.get("model", "test")}

    def chunk(delta: dict, finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        for word in re.findall(r"\s*\S+\s*|\s+", answer["content"] or ""):
            if answer["chunk_delay"]:
                await asyncio.sleep(answer["chunk_delay"])
            yield chunk({"content": word})
        ids = answer["tool_call_ids"]
        for index, call in enumerate(answer["tool_calls"]):
            head = {"index": index, "type": "function", "function": {"name": call["name"], "arguments": ""}}
            yield chunk({"tool_calls": [head if ids == "none" else {**head, "id": call["id"]}]})
            arguments = call["arguments"]
            for start in range(0, len(arguments), ARGUMENT_PIECE):
                piece = {"index": index, "function": {"arguments": arguments[start:start + ARGUMENT_PIECE]}}
                yield chunk({"tool_calls": [{**piece, "id": call["id"]} if ids == "every" else piece]})
        yield chunk({}, answer["finish_reason"])
        if (body.get("stream_options") or {}).get("include_usage"):
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': answer['usage']})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        entry["end"] = time.monotonic()


def _scripted_error(script: dict) -> JSONResponse:
    status = int(script["status"])
    headers = {}
    if script.get("retry_after") is not None:
        value = script["retry_after"]
        headers["Retry-After"] = value if isinstance(value, str) else f"{value:g}"
    if script.get("location"):
        headers["Location"] = script["location"]
    kind = {429: "rate_limit_exceeded", 401: "invalid_api_key"}.get(status, "server_error" if status >= 500
                                                                     else "invalid_request_error")
    return JSONResponse({"error": {"message": f"scripted {status}", "type": kind, "code": kind, "param": None}},
                        status_code=status, headers=headers)


def build_app() -> FastAPI:
    from core.embedder import LocalModel

    model = LocalModel()
    model.load()
    failures: Counter[str] = Counter()
    app = FastAPI()
    stats = {"embedding_requests": 0, "embedded_texts": 0, "chat_requests": 0}
    served: list[list[str]] = []
    chat_log, scripts, call_ids, completion_ids = ChatLog(), Scripts(), itertools.count(1), itertools.count(1)

    @app.get("/stats")
    async def get_stats(contains: str | None = None) -> dict:
        """Totals, or with `contains`: how many calls and texts carried that tag (other tests' work excluded)."""
        if contains is None:
            return stats
        calls = [texts for texts in served if any(contains in t for t in texts)]
        return {"embedding_requests": len(calls), "embedded_texts": sum(contains in t for c in calls for t in c),
                "chat_requests": len(chat_log.matching(contains)),
                "chat_max_in_flight": chat_log.max_in_flight(contains)}

    @app.post("/scripts")
    async def add_script(request: Request) -> dict:
        body = await request.json()
        if not body.get("marker") or not isinstance(body.get("responses"), list):
            return JSONResponse({"error": {"message": "give a marker and a list of responses"}}, status_code=422)
        return {"marker": body["marker"], "queued": scripts.add(body["marker"], body["responses"])}

    @app.get("/scripts/{marker}")
    async def get_script(marker: str) -> dict:
        return {"marker": marker, "remaining": len(scripts.queues.get(marker, ()))}

    @app.delete("/scripts/{marker}")
    async def drop_script(marker: str) -> dict:
        return {"marker": marker, "dropped": len(scripts.queues.pop(marker, ()))}

    @app.get("/chat/requests")
    async def chat_requests(contains: str | None = None) -> list[dict]:
        return [entry["body"] for entry in chat_log.matching(contains)]

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await request.json()
        text = message_text(body.get("messages") or [])
        entry = chat_log.start(text, body)
        stats["chat_requests"] += 1
        streaming = False
        try:
            script = dict(scripts.take(text) or {})
            if script.get("delay"):
                await asyncio.sleep(float(script.pop("delay")))
            if "status" in script:
                return _scripted_error(script)
            answer = _answer(body, script, text, call_ids)
            completion_id = f"chatcmpl-{next(completion_ids)}"
            if body.get("stream"):
                streaming = True
                return StreamingResponse(_chunks(body, answer, completion_id, entry), media_type="text/event-stream")
            return _completion(body, answer, completion_id)
        finally:
            if not streaming:
                entry["end"] = time.monotonic()

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
        if str(body.get("model", "")).startswith("reversed"):  # "another model": the same vectors, reversed
            vectors = [v[::-1] for v in vectors]
        elif str(body.get("model", "")).startswith("doubled"):  # another model, of twice the dimension
            vectors = [[x * 0.5 ** 0.5 for x in v + v] for v in vectors]
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
