"""The web console in headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium) against
`agentmem up`, as a user runs it: sign in with the printed key, ingest through the API and watch the job's bar
reach 100% on the live page, search with the score explanation and open a memory's history, a block's versions
with a diff and a revert, a chat turn streaming its tokens and showing its tool call, schedules and webhooks; a
user signing in with a password; a viewer key seeing no write button anywhere.

Each page's screenshot is written to tests/artifacts/console/ (the README shows two of them, copied to
docs/screenshots/)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest

from tests.integration.test_up import Up
from tests.support.sse import finish
from tests.support.stack import ROOT, free_port, wait_http

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
SHOTS = ROOT / "tests" / "artifacts" / "console"
WAIT = 120  # seconds a page may take to show what the test waits for (a cold model, two busy cores)

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="the console tests need Debian's chromium and chromium-driver (apt-get install -y chromium "
           "chromium-driver; .ci/run installs them)")


class Console:
    """A headless Chromium on the console, with the waits the test needs."""

    def __init__(self, base_url: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         "--window-size=1360,900", "--no-first-run", "--disable-extensions"):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.base_url = base_url

    def wait(self, condition, timeout: float = WAIT):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(condition)

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def shown(self, css: str, timeout: float = WAIT):
        """The first element matching `css`, once there is one."""
        return self.wait(lambda _: (self.find(css) or [None])[0], timeout)

    def text(self, css: str) -> str:
        """The text of the first element matching `css` now ("" if none, or if it was just re-rendered)."""
        from selenium.common.exceptions import StaleElementReferenceException

        try:
            found = self.find(css)
            return found[0].text if found else ""
        except StaleElementReferenceException:
            return ""

    def go(self, hash_: str) -> None:
        """Open a page of the console and wait until it has loaded its data (not the page it leaves)."""
        self.driver.execute_script(
            "document.querySelector('#view [data-ready]')?.removeAttribute('data-ready');"
            "if (location.hash === arguments[0]) route(); else location.hash = arguments[0];", hash_)
        name = hash_.lstrip("#/").split("/")[0]
        self.shown(f"#view [data-page='{name}'][data-ready]")

    def sign_in_with_key(self, key: str) -> None:
        self.driver.get(f"{self.base_url}/console/")
        self.shown("#api-key").send_keys(key)
        self.shown("#key-form button[type=submit]").click()
        self.shown("#page-live[data-ready]")

    def sign_out(self) -> None:
        self.shown("#sign-out").click()
        self.shown("#sign-in:not([hidden])")

    def write_buttons(self) -> int:
        return len(self.find("[data-write]"))

    def screenshot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(SHOTS / f"{name}.png"))

    def quit(self) -> None:
        self.driver.quit()


def start_model_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.openai_server", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_http(f"http://127.0.0.1:{port}/health", 120)
    return proc


async def script(model_url: str, marker: str, responses: list[dict]) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        scripted = await http.post(f"{model_url}/scripts", json={"marker": marker, "responses": responses})
    assert scripted.status_code == 200, scripted.text


async def test_the_console_under_agentmem_up():
    data_dir = Path(tempfile.mkdtemp(prefix="agentmem-up-console-", dir="/tmp"))
    port, model_port = free_port(), free_port()
    model_url = f"http://127.0.0.1:{model_port}"
    model = start_model_server(model_port)
    # The service-wide LLM is the tests' OpenAI-compatible server: agents chat through it.
    up = Up(data_dir, port, env={"AGENTMEM_LLM_BASE_URL": f"{model_url}/v1", "AGENTMEM_LLM_MODEL": "test-chat",
                                 "AGENTMEM_LLM_API_KEY": "test-key"})
    api = f"http://127.0.0.1:{port}"
    console = None
    try:
        up.wait_ready()
        key = up.printed_key()
        assert f"  Console: {api}/console/\n" in up.output, "".join(up.output[-12:])
        async with httpx.AsyncClient(base_url=api, timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
            console = Console(api)
            await owner_sees_every_page(console, client, key, model_url)
            viewer = (await client.post("/api/v1/api-keys", json={"name": "console viewer", "role": "viewer"})).json()
            console.sign_out()
            await viewer_sees_no_write_button(console, client, viewer["key"])
            console.sign_out()
            await a_user_signs_in_with_a_password(console, client)
        # The key went in headers only: no request line of the access log carries it.
        assert [line for line in up.output if key in line and not line.strip().startswith("Key:")] == []
        code, alive = up.interrupt()
        assert code == 0 and alive == []
    finally:
        if console is not None:
            console.quit()
        if up.proc.poll() is None:  # the test failed before its Ctrl-C: stop everything `up` started
            up.interrupt()
        model.terminate()
        model.wait(timeout=10)
        shutil.rmtree(data_dir, ignore_errors=True)


OWNER_WRITE_BUTTONS: dict[str, int] = {}


async def owner_sees_every_page(console: Console, client: httpx.AsyncClient, key: str, model_url: str) -> None:
    console.sign_in_with_key(key)
    assert console.shown("#who").text.endswith("owner")
    assert key not in console.driver.current_url

    # Live: a job ingested through the API appears and its bar reaches 100%.
    facts = [f"Fact {i}: the console user's locker number ends in {i}." for i in range(40)]
    facts.append("The console user is allergic to peanuts and carries an epinephrine pen.")
    job = (await client.post("/api/v1/memories", json={"user_id": "console-user",
                                                       "items": [{"content": f} for f in facts]})).json()
    console.shown(f"#live-jobs [data-job-row='{job['id']}']")
    console.shown(f"#live-jobs [data-job-row='{job['id']}'] .bar.succeeded[data-pct='100']")
    row = console.shown(f"#live-jobs [data-job-row='{job['id']}']")
    assert "ingest" in row.text and "succeeded" in row.text and "100%" in row.text
    OWNER_WRITE_BUTTONS["live"] = console.write_buttons()

    # Live, a failure shows its error: an agent turn whose model refuses the key (401) fails at once.
    agent = (await client.post("/api/v1/agents", json={"name": "console-helper", "system": "You help."})).json()
    refused = f"refused-{uuid.uuid4().hex[:8]}"
    await script(model_url, refused, [{"status": 401}])
    conversation = (await client.post(f"/api/v1/agents/{agent['id']}/conversations", json={})).json()
    posted = await client.post(f"/api/v1/conversations/{conversation['id']}/messages", json={"content": refused})
    failed = await finish(client, posted.json()["job"]["id"], timeout=120)
    assert failed["status"] == "failed" and failed["error"]["code"] == "llm_rejected", failed
    console.wait(lambda _: "llm_rejected" in console.text(f"#live-jobs [data-job-row='{failed['id']}'] td.error"))
    assert console.find(f"#live-jobs [data-job-row='{failed['id']}'] .status.failed")
    console.screenshot("live")

    # Jobs, and a job's detail with its event log and result.
    console.go("#/jobs")
    assert console.shown(f"#jobs [data-job-row='{job['id']}']")
    console.screenshot("jobs")
    console.go(f"#/jobs/{job['id']}")
    console.shown("#job-events tbody tr")
    result = (await client.get(f"/api/v1/jobs/{job['id']}")).json()["result"]
    assert result and all(f'"{name}"' in console.shown("#job-result").text for name in result), result
    console.screenshot("job")

    # Memories: a search with the score explanation; a memory's history.
    console.go("#/memories")
    OWNER_WRITE_BUTTONS["memories"] = console.write_buttons()
    query = console.shown("#search-query")
    query.send_keys("what food must this person avoid?")
    console.shown("#search-scope-value").send_keys("console-user")
    console.shown("#search-form button[type=submit]").click()
    first = console.shown("#hits tr.hit")
    assert "peanuts" in first.text
    cells = first.find_elements("css selector", "td")
    assert float(cells[2].text) > 0 and "(1)" in cells[3].text  # score, then vector score with its rank
    first.find_element("css selector", "button.secondary").click()
    assert "ADD" in console.shown("#memory-history tbody tr").text
    console.screenshot("memories")

    # Agents: a block's versions with a diff, and a revert.
    block = (await client.post("/api/v1/blocks", json={"label": "persona", "value": "I am terse."})).json()
    assert (await client.post(f"/api/v1/agents/{agent['id']}/blocks/{block['id']}")).status_code == 200
    await client.patch(f"/api/v1/blocks/{block['id']}", json={"value": "I am terse.\nI like lists."})
    console.go(f"#/agents/{agent['id']}")
    card = console.shown(f"[data-block='{block['id']}']")
    assert "v2" in card.text
    card.find_element("css selector", "button.secondary").click()
    diff = console.shown(f"[data-block='{block['id']}'] .diff .add")
    assert "I like lists." in diff.text
    OWNER_WRITE_BUTTONS["agent"] = console.write_buttons()
    console.screenshot("agents")
    console.shown(f"[data-block='{block['id']}'] .versions button[data-write]").click()  # revert to version 1
    console.wait(lambda _: "v3" in console.text(f"[data-block='{block['id']}']"))
    reverted = (await client.get(f"/api/v1/blocks/{block['id']}")).json()
    assert reverted["version"] == 3 and reverted["value"] == "I am terse."

    # Chat: a turn that calls a tool, then streams its answer token by token.
    mark = f"console-{uuid.uuid4().hex[:8]}"
    answer = "You should avoid peanuts , since you are allergic to them and carry a pen ."
    await script(model_url, mark, [{"tool_calls": [{"name": "memory_search", "arguments": {"query": "allergies"}}]},
                                   {"content": answer, "chunk_delay": 0.4}])
    console.go(f"#/chat/{agent['id']}")
    OWNER_WRITE_BUTTONS["chat"] = console.write_buttons()
    console.shown("#chat-user").send_keys("console-user")
    console.shown("#chat-input").send_keys(f"What should I not eat? {mark}")
    console.shown("#chat-form button[type=submit]").click()
    assert "memory_search" in console.shown("#chat-log .tool-call").text
    assert console.shown("#chat-log .tool-result")
    # Streaming: the answer is on the page while it is still being written…
    partial = console.shown("#chat-log .msg.assistant.streaming")
    assert len(partial.text) < len(answer)
    # …and whole once the turn succeeded.
    done = console.shown("#chat-log .msg.assistant.done")
    assert done.text == answer
    console.screenshot("chat")

    # Schedules (the defaults, with their last runs) and webhooks (with their deliveries).
    made = await client.post("/api/v1/schedules", json={"name": "nightly check", "task": "integrity",
                                                        "cron": "0 5 * * *"})
    assert made.status_code == 201, made.text
    console.go("#/schedules")
    assert "nightly check" in console.shown("#schedules tbody tr").text
    OWNER_WRITE_BUTTONS["schedules"] = console.write_buttons()
    console.screenshot("schedules")
    hook = await client.post("/api/v1/webhooks", json={"url": "http://93.184.216.34:9/hook",
                                                       "event_types": ["job.failed"]})
    assert hook.status_code == 201, hook.text
    console.go("#/webhooks")
    assert "93.184.216.34" in console.shown("#webhooks tbody tr").text
    console.shown("#webhooks tbody button.secondary").click()
    console.shown("#deliveries table")
    console.screenshot("webhooks")
    assert all(count > 0 for count in OWNER_WRITE_BUTTONS.values()), OWNER_WRITE_BUTTONS
    # Nothing the pages did was refused by the browser (the console's content security policy included).
    assert [e for e in console.driver.get_log("browser") if e["level"] == "SEVERE"] == []
    OWNER_WRITE_BUTTONS["agent_id"] = agent["id"]  # type: ignore[assignment]


async def viewer_sees_no_write_button(console: Console, client: httpx.AsyncClient, viewer_key: str) -> None:
    console.sign_in_with_key(viewer_key)
    assert console.shown("#who").text.endswith("viewer")
    agent_id = OWNER_WRITE_BUTTONS["agent_id"]
    for page in ("#/live", "#/jobs", "#/memories", f"#/agents/{agent_id}", f"#/chat/{agent_id}", "#/schedules",
                 "#/webhooks"):
        console.go(page)
        if page.startswith("#/agents"):
            console.shown("[data-block] button.secondary").click()  # the versions, where owners can revert
            console.shown("[data-block] .versions")
        if page == "#/memories":
            console.shown("#memory-list table")
        assert console.write_buttons() == 0, page
    assert console.find("#chat-input") == []
    assert "webhooks:read" in console.shown("#page-webhooks").text
    console.go("#/live")
    console.screenshot("viewer")


async def a_user_signs_in_with_a_password(console: Console, client: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=60) as anonymous:
        name = f"console-{uuid.uuid4().hex[:6]}"
        registered = await anonymous.post("/api/v1/auth/register", json={"username": name,
                                                                        "password": "a long console passphrase"})
        assert registered.status_code == 201, registered.text
        token = (await anonymous.post("/api/v1/auth/login", json={"username": name,
                                                                  "password": "a long console passphrase"})).json()
        created = await anonymous.post("/api/v1/organizations", json={"name": f"{name}-lab"},
                                       headers={"Authorization": f"Bearer {token['access_token']}"})
        assert created.status_code == 201, created.text
    console.driver.get(f"{console.base_url}/console/")
    console.shown(".tabs button[data-tab='login']").click()
    console.shown("#username").send_keys(name)
    console.shown("#password").send_keys("a long console passphrase")
    console.shown("#login-form button[type=submit]").click()
    console.shown("#page-live[data-ready]")
    assert console.shown("#who").text == f"{name} · owner"
