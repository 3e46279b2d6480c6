"""Agents end to end: CRUD with cursor pages, blocks attached, shared and detached, and the compiled prompt
(default template, a custom one, a template that does not parse, a template that fails while rendering)."""

from __future__ import annotations

import uuid

import httpx

from schemas.permissions import Role


async def make_block(client: httpx.AsyncClient, label: str, value: str, **extra) -> dict:
    response = await client.post("/api/v1/blocks", json={"label": label, "value": value, "limit": 300, **extra})
    assert response.status_code == 201, response.text
    return response.json()


async def make_agent(client: httpx.AsyncClient, **body) -> dict:
    response = await client.post("/api/v1/agents", json={"name": f"agent-{uuid.uuid4().hex[:8]}", **body})
    assert response.status_code == 201, response.text
    return response.json()


async def prompt_of(client: httpx.AsyncClient, agent_id: str) -> httpx.Response:
    return await client.get(f"/api/v1/agents/{agent_id}/prompt")


async def test_an_agent_compiles_its_blocks_into_the_default_prompt_in_attachment_order(owner):
    persona = await make_block(owner, "persona", "I am Sam, a patient Portuguese tutor.", description="Who you are")
    human = await make_block(owner, "human", "Name: Alice. Beginner.", read_only=True)
    agent = await make_agent(owner, system="Teach Portuguese.", block_ids=[human["id"], persona["id"]])
    assert [b["label"] for b in agent["blocks"]] == ["human", "persona"]
    response = await prompt_of(owner, agent["id"])
    assert response.status_code == 200, response.text
    compiled = response.json()
    text = compiled["prompt"]
    assert compiled["template"] == "default" and compiled["chars"] == len(text)
    assert text.startswith("Teach Portuguese.\n") and text.index("<human>") < text.index("<persona>")
    assert "<value>\nI am Sam, a patient Portuguese tutor.\n</value>\n</persona>" in text
    assert "<description>\nWho you are\n</description>" in text and "- read_only=true" in text
    assert compiled["blocks"] == [{"id": human["id"], "label": "human", "version": 1},
                                  {"id": persona["id"], "label": "persona", "version": 1}]
    # A block change shows in the next compile.
    changed = await owner.patch(f"/api/v1/blocks/{persona['id']}", json={"value": "I am Sam, a strict tutor."})
    assert changed.status_code == 200
    assert "I am Sam, a strict tutor." in (await prompt_of(owner, agent["id"])).json()["prompt"]


async def test_a_custom_template_renders_and_its_errors_are_422_with_the_line(owner, db):
    human = await make_block(owner, "human", "Name: Alice.")
    template = "{{ system }}\nAbout the user ({{ block.human.chars }} chars): {{ block.human.value }}"
    agent = await make_agent(owner, system="Be brief.", prompt_template=template, block_ids=[human["id"]])
    compiled = (await prompt_of(owner, agent["id"])).json()
    assert compiled == {**compiled, "template": "custom",
                        "prompt": "Be brief.\nAbout the user (12 chars): Name: Alice.\n"}

    name = f"broken-{uuid.uuid4().hex[:8]}"
    broken = await owner.post("/api/v1/agents", json={"name": name, "prompt_template": "ok\n{% if %}\n"})
    assert broken.status_code == 422, broken.text
    assert broken.json()["error"]["code"] == "template_invalid" and broken.json()["error"]["details"]["line"] == 2
    assert await db("SELECT id FROM agents WHERE name = :n", n=name) == []
    patched = await owner.patch(f"/api/v1/agents/{agent['id']}", json={"prompt_template": "{% for %}"})
    assert patched.status_code == 422 and patched.json()["error"]["code"] == "template_invalid"

    # Parses, but names a block the agent doesn't have: fails when rendered, on line 3.
    await owner.patch(f"/api/v1/agents/{agent['id']}", json={"prompt_template": "a\nb\n{{ block.persona.value }}"})
    failed = await prompt_of(owner, agent["id"])
    assert failed.status_code == 422, failed.text
    error = failed.json()["error"]
    assert error["code"] == "template_error" and error["details"]["line"] == 3 and "persona" in error["message"]
    unsafe = await owner.patch(f"/api/v1/agents/{agent['id']}",
                               json={"prompt_template": "{{ system.__class__.__mro__ }}"})
    assert unsafe.status_code == 200
    refused = await prompt_of(owner, agent["id"])
    assert refused.status_code == 422 and "unsafe" in refused.json()["error"]["message"]
    # null: back to the default template.
    reset = await owner.patch(f"/api/v1/agents/{agent['id']}", json={"prompt_template": None})
    assert reset.json()["prompt_template"] is None
    assert (await prompt_of(owner, agent["id"])).json()["template"] == "default"


async def test_blocks_are_shared_attached_once_and_labels_are_unique_per_agent(owner):
    shared = await make_block(owner, "team", "We ship on Fridays.")
    first = await make_agent(owner, block_ids=[shared["id"]])
    second = await make_agent(owner, block_ids=[shared["id"]])
    other_team = await make_block(owner, "team", "Another team block.")
    clash = await owner.post(f"/api/v1/agents/{first['id']}/blocks/{other_team['id']}")
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "block_label_taken", clash.text
    notes = await make_block(owner, "notes", "Sprint 12.")
    attached = await owner.post(f"/api/v1/agents/{first['id']}/blocks/{notes['id']}")
    again = await owner.post(f"/api/v1/agents/{first['id']}/blocks/{notes['id']}")
    assert attached.status_code == again.status_code == 200
    assert [b["label"] for b in again.json()["blocks"]] == ["team", "notes"]
    # Renaming a block to a label its agent already uses is refused, and nothing changes.
    renamed = await owner.patch(f"/api/v1/blocks/{notes['id']}", json={"label": "team"})
    assert renamed.status_code == 409 and renamed.json()["error"]["code"] == "block_label_taken"
    assert (await owner.get(f"/api/v1/blocks/{notes['id']}")).json()["version"] == 1
    # One change to the shared block is seen by both agents.
    await owner.patch(f"/api/v1/blocks/{shared['id']}", json={"value": "We ship on Thursdays."})
    for agent in (first, second):
        assert "We ship on Thursdays." in (await prompt_of(owner, agent["id"])).json()["prompt"]
    listed = await owner.get("/api/v1/blocks", params={"agent_id": second["id"]})
    assert [b["id"] for b in listed.json()["items"]] == [shared["id"]]

    detached = await owner.delete(f"/api/v1/agents/{first['id']}/blocks/{shared['id']}")
    assert detached.status_code == 200 and [b["label"] for b in detached.json()["blocks"]] == ["notes"]
    assert (await owner.delete(f"/api/v1/agents/{first['id']}/blocks/{shared['id']}")).status_code == 404
    # Deleting a block detaches it everywhere; deleting an agent leaves its blocks.
    assert (await owner.delete(f"/api/v1/blocks/{shared['id']}")).status_code == 204
    assert (await owner.get(f"/api/v1/agents/{second['id']}")).json()["blocks"] == []
    assert (await owner.delete(f"/api/v1/agents/{first['id']}")).status_code == 204
    assert (await owner.get(f"/api/v1/agents/{first['id']}")).status_code == 404
    assert (await owner.get(f"/api/v1/blocks/{notes['id']}")).status_code == 200


async def test_agents_list_newest_first_in_cursor_pages(owner):
    made = [await make_agent(owner, description=f"number {n}") for n in range(5)]
    seen, cursor = [], None
    while True:
        response = await owner.get("/api/v1/agents", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        seen += [a["id"] for a in response.json()["items"]]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [a["id"] for a in reversed(made)]
    changed = await owner.patch(f"/api/v1/agents/{made[0]['id']}", json={"name": "renamed", "metadata": {"a": 1}})
    assert (changed.json()["name"], changed.json()["metadata"]) == ("renamed", {"a": 1})


async def test_attaching_another_organizations_block_is_404_and_a_viewer_may_only_read(tenant, other_tenant, stack):
    async with (httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(), timeout=30) as a,
                httpx.AsyncClient(base_url=stack.api_url, headers=other_tenant.headers(), timeout=30) as b,
                httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(Role.VIEWER), timeout=30) as viewer):
        theirs = await make_block(b, "human", "Org B's secret.")
        agent = await make_agent(a)
        response = await a.post(f"/api/v1/agents/{agent['id']}/blocks/{theirs['id']}")
        assert response.status_code == 404 and "secret" not in response.text
        created = await a.post("/api/v1/agents", json={"name": "x", "block_ids": [theirs["id"]]})
        assert created.status_code == 404
        assert (await viewer.get(f"/api/v1/agents/{agent['id']}/prompt")).status_code == 200
        refused = await viewer.patch(f"/api/v1/agents/{agent['id']}", json={"name": "viewer was here"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
