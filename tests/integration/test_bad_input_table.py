"""Every field of every request × the values PostgreSQL, the scorer or a column can't hold.

Derived from the OpenAPI document (tests/support/bad_inputs.py), so a new route or field is covered
the day it is added. Each bad request must be a 4xx in the one error shape, say which rule it broke,
and change nothing: the organization's rows, and the count of organizations and accounts, are the
same before and after.
"""

from __future__ import annotations

import httpx
import pytest

from schemas.inputs import INT32_MAX
from tests.support.bad_inputs import NUL, field_cases, form_cases, query_parameters, request_schema
from tests.support.routes import WEBSOCKET, Multipart, endpoints, fresh_ids, send_body

STATE_SQL = """
SELECT 'memory', (to_jsonb(x) - 'embedding')::text FROM memories x WHERE x.org_id = :org
UNION ALL SELECT 'job', to_jsonb(j)::text FROM jobs j WHERE j.org_id = :org
UNION ALL SELECT 'api_key', (to_jsonb(k) - 'last_used_at')::text FROM api_keys k WHERE k.org_id = :org
UNION ALL SELECT 'organization', to_jsonb(o)::text FROM organizations o WHERE o.id = :org
UNION ALL SELECT 'llm_config', to_jsonb(c)::text FROM llm_configs c WHERE c.org_id = :org
UNION ALL SELECT 'agent', to_jsonb(g)::text FROM agents g WHERE g.org_id = :org
UNION ALL SELECT 'block', to_jsonb(b)::text FROM blocks b WHERE b.org_id = :org
UNION ALL SELECT 'tool', to_jsonb(t)::text FROM tools t WHERE t.org_id = :org
UNION ALL SELECT 'mcp_server', to_jsonb(m)::text FROM mcp_servers m WHERE m.org_id = :org
UNION ALL SELECT 'source', to_jsonb(s)::text FROM sources s WHERE s.org_id = :org
UNION ALL SELECT 'webhook', to_jsonb(w)::text FROM webhooks w WHERE w.org_id = :org
UNION ALL SELECT 'count', (SELECT count(*) FROM organizations)::text || '/' || (SELECT count(*) FROM users)::text
ORDER BY 1, 2
"""

# What the error's details say for each kind of bad value.
EXPECTED_TYPES = {
    "NUL": {"string_contains_nul"}, "NUL in a key": {"string_contains_nul"}, "NUL in a value": {"string_contains_nul"},
    "NaN": {"number_not_finite"}, "Infinity": {"number_not_finite"}, "-Infinity": {"number_not_finite"},
    "1e400": {"number_not_finite"}, "NaN in a value": {"number_not_finite"}, "1e400 in a value": {"number_not_finite"},
    "over maxLength": {"string_too_long", "too_long"},
    "2^31": {"less_than_equal"}, "2^63": {"less_than_equal"},
}


async def state_of(db, org_id) -> list:
    return [tuple(row) for row in await db(STATE_SQL, org=org_id)]


def body_endpoints() -> list:
    """Routes whose body has a field that could hold a bad value (not only booleans and enums)."""
    return [pytest.param(e, id=e.id) for e in endpoints()
            if e.method != WEBSOCKET and not e.public and getattr(e.route, "body_field", None) is not None
            and not isinstance(e.template, Multipart)
            and field_cases(e.body(fresh_ids()), request_schema(e.method, e.path))]


def form_endpoints() -> list:
    """Routes that take a multipart form (uploads)."""
    return [pytest.param(e, id=e.id) for e in endpoints()
            if e.method != WEBSOCKET and not e.public and isinstance(e.template, Multipart)]


def query_endpoints() -> list:
    return [pytest.param(e, id=e.id) for e in endpoints()
            if e.method != WEBSOCKET and any(p["schema"].get("type") == "string" or "anyOf" in p["schema"]
                                             for p in query_parameters(e.method, e.path))]


def refusal_problem(response: httpx.Response, label: str) -> str | None:
    """Why this answer isn't the expected refusal, or None."""
    if not 400 <= response.status_code < 500:
        return f"status {response.status_code}: {response.text[:300]}"
    error = response.json().get("error") or {}
    if not error.get("code") or not error.get("request_id"):
        return f"not the error shape: {response.text[:300]}"
    types = {d.get("type") for d in error["details"].get("errors", []) if isinstance(d, dict)}
    if response.status_code == 422 and not types & EXPECTED_TYPES[label]:
        return f"refused, but not for the {label}: {error}"
    return None


@pytest.mark.parametrize("endpoint", body_endpoints())
async def test_every_body_field_refuses_unstorable_values_and_changes_nothing(endpoint, owner, tenant, db):
    ids = fresh_ids()
    template = endpoint.body(ids)
    cases = field_cases(template, request_schema(endpoint.method, endpoint.path))
    assert cases, f"{endpoint.id}: no field found in its request schema"
    before = await state_of(db, tenant.org_id)
    problems = []
    for case in cases:
        response = await owner.request(endpoint.method, endpoint.url(ids), content=case.body,
                                       headers={"content-type": "application/json"})
        problem = refusal_problem(response, case.label)
        if problem:
            problems.append(f"{case.field} = {case.label}: {problem}")
    assert not problems, "\n".join(problems)
    assert await state_of(db, tenant.org_id) == before


@pytest.mark.parametrize("endpoint", form_endpoints())
async def test_every_form_field_refuses_unstorable_values_and_changes_nothing(endpoint, owner, tenant, db):
    ids = fresh_ids()
    template = endpoint.body(ids)
    cases = form_cases(template.data, request_schema(endpoint.method, endpoint.path, form=True))
    assert cases, f"{endpoint.id}: no text or number field found in its form"
    before = await state_of(db, tenant.org_id)
    problems = []
    for field, label, data in cases:
        response = await owner.request(endpoint.method, endpoint.url(ids), data=data, files=template.files)
        problem = refusal_problem(response, label)
        if problem:
            problems.append(f"{field} = {label}: {problem}")
    assert not problems, "\n".join(problems)
    assert await state_of(db, tenant.org_id) == before


@pytest.mark.parametrize("endpoint", query_endpoints())
async def test_every_query_parameter_refuses_nul(endpoint, owner, tenant, db):
    ids = fresh_ids()
    before = await state_of(db, tenant.org_id)
    problems = []
    for parameter in query_parameters(endpoint.method, endpoint.path):
        body = endpoint.body(ids)
        async with owner.stream(endpoint.method, endpoint.url(ids), params={parameter["name"]: NUL},
                                **send_body(body)) as response:
            await response.aread()
        errors = response.json()["error"]["details"].get("errors", [{}]) if response.status_code == 422 else [{}]
        if errors[0].get("type") != "string_contains_nul":
            problems.append(f"?{parameter['name']}=%00: {response.status_code} {response.text[:200]}")
    assert not problems, "\n".join(problems)
    assert await state_of(db, tenant.org_id) == before


@pytest.mark.parametrize("payload", [
    {"username": NUL, "password": "a long passphrase"},
    {"username": "someone", "password": "pass\x00word"},
], ids=["NUL in username", "NUL in password"])
async def test_sign_in_refuses_nul_as_json_and_as_a_form(anonymous, payload):
    as_json = await anonymous.post("/api/v1/auth/login", json=payload)
    as_form = await anonymous.post("/api/v1/auth/login", data=payload)
    for response in (as_json, as_form):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"]["errors"][0]["type"] == "string_contains_nul"


@pytest.mark.parametrize("field,value", [
    ("username", "name\x00x"), ("full_name", NUL), ("email", "a\x00@example.com"), ("password", "long enough\x00")])
async def test_registration_refuses_nul_and_creates_no_account(anonymous, db, field, value):
    [[users_before]] = await db("SELECT count(*) FROM users")
    body = {"username": "nul-tester", "password": "a long passphrase", "email": "nul@example.com"} | {field: value}
    response = await anonymous.post("/api/v1/auth/register", json=body)
    assert response.status_code == 422, response.text
    assert await db("SELECT count(*) FROM users") == [(users_before,)]


async def test_an_integer_beyond_its_column_is_a_422_not_a_500(owner):
    block = await owner.post("/api/v1/blocks", json={"label": "persona", "value": "v1"})
    assert block.status_code == 201, block.text
    response = await owner.post(f"/api/v1/blocks/{block.json()['id']}/revert", json={"version": INT32_MAX + 1})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["errors"][0]["type"] == "less_than_equal"


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_non_finite_numbers_in_metadata_and_filters_are_refused(owner, tenant, db, raw):
    before = await state_of(db, tenant.org_id)
    ingest = '{"items": [{"content": "a finite memory", "metadata": {"score": ' + raw + "}}]}"
    search = '{"query": "q", "filters": {"field": "metadata.score", "op": "gt", "value": ' + raw + "}}"
    for path, body in (("/api/v1/memories", ingest), ("/api/v1/memories/search", search)):
        response = await owner.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"]["errors"][0]["type"] == "number_not_finite"
    assert await state_of(db, tenant.org_id) == before


@pytest.mark.parametrize("metadata,problem", [
    ({"k": "x" * 20_000}, "bytes"),
    ({f"k{i}": i for i in range(300)}, "keys"),
    ({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}, "levels"),
], ids=["too big", "too many keys", "too deep"])
async def test_metadata_is_capped_in_size_keys_and_depth(owner, tenant, db, metadata, problem):
    before = await state_of(db, tenant.org_id)
    response = await owner.post("/api/v1/memories", json={"items": [{"content": "x", "metadata": metadata}]})
    assert response.status_code == 422, response.text
    assert problem in response.text
    assert await state_of(db, tenant.org_id) == before


async def test_a_body_over_the_limit_is_a_413_before_it_is_read(owner, tenant, db, stack):
    before = await state_of(db, tenant.org_id)
    limit = int(stack.env.get("AGENTMEM_MAX_BODY_BYTES", 33_554_432))
    metadata = {"blob": "x" * (limit + 1)}
    announced = await owner.post("/api/v1/memories", json={"items": [{"content": "x", "metadata": metadata}]})
    assert announced.status_code == 413 and announced.json()["error"]["code"] == "payload_too_large"

    async def chunks():  # no Content-Length: counted as it streams
        yield b'{"items": [{"content": "x", "metadata": {"blob": "'
        for _ in range(limit // 1_000_000 + 1):
            yield b"x" * 1_000_000
        yield b'"}}]}'

    streamed = await owner.post("/api/v1/memories", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "payload_too_large"
    assert await state_of(db, tenant.org_id) == before


async def test_oversized_and_too_many_headers_are_a_431(owner):
    big = await owner.get("/api/v1/memories", headers={"X-Padding": "x" * 1_000_000})
    assert big.status_code == 431 and big.json()["error"]["code"] == "request_headers_too_large"
    many = await owner.get("/api/v1/memories", headers={f"X-H{i}": "v" for i in range(200)})
    assert many.status_code == 431 and many.json()["error"]["code"] == "request_headers_too_large"


@pytest.mark.parametrize("last_event_id", ["18446744073709551616-0", "0-18446744073709551616",
                                           "99999999999999999999-99999999999999999999"])
async def test_a_last_event_id_beyond_64_bits_is_refused_before_the_stream_starts(client, last_event_id):
    job = await client.post("/api/v1/memories", json={"items": [{"content": "followed"}]})
    assert job.status_code == 202
    response = await client.get(f"/api/v1/jobs/{job.json()['id']}/events", headers={"Last-Event-ID": last_event_id})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_last_event_id"


def test_the_cases_cover_the_fields_the_adversarial_pass_named():
    """The table reaches the fields the issue lists (memory content, user_id, metadata keys and values, search
    text, names of agents, blocks, tools, keys and LLM configs)."""
    covered = set()
    for param in body_endpoints():
        endpoint = param.values[0]
        for case in field_cases(endpoint.body(fresh_ids()), request_schema(endpoint.method, endpoint.path)):
            covered.add((endpoint.id, case.field, case.label))
    for needed in [("POST /api/v1/memories", "items.0.content", "NUL"),
                   ("POST /api/v1/memories", "items.0.user_id", "NUL"),
                   ("POST /api/v1/memories", "items.0.metadata", "NUL in a key"),
                   ("POST /api/v1/memories/search", "query", "NUL"),
                   ("POST /api/v1/memories/search", "metadata", "NaN in a value"),
                   ("POST /api/v1/agents", "name", "NUL"), ("POST /api/v1/blocks", "label", "NUL"),
                   ("POST /api/v1/tools", "name", "NUL"), ("POST /api/v1/api-keys", "name", "NUL"),
                   ("POST /api/v1/llm/configs", "name", "NUL"),
                   ("POST /api/v1/blocks/{block_id}/revert", "version", "2^31")]:
        assert needed in covered, needed
