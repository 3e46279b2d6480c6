"""The WebSocket protocol is documented where users look (OpenAPI description, README), and completely."""

from pathlib import Path

from api.app import create_app
from api.routes import ws
from schemas.enums import EventType

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_protocol_is_in_the_openapi_description_and_the_readme():
    assert ws.PROTOCOL.strip() in create_app().openapi()["info"]["description"]
    assert ws.PROTOCOL.strip() in README.read_text()


def test_the_protocol_names_every_action_and_every_job_event():
    source = Path(ws.__file__).read_text()
    for action in ("subscribe", "unsubscribe", "send", "ping"):
        assert f'"action": "{action}"' in ws.PROTOCOL and f'"{action}"' in source
    job_events = [e for e in EventType if e not in (EventType.ERROR, EventType.WEBHOOK_DISABLED)]
    assert [e.value for e in job_events if f"`{e.value}`" not in ws.PROTOCOL] == []
    for code in ("not_found", "invalid_input", "malformed_message", "unknown_action"):
        assert f"`{code}`" in ws.PROTOCOL and f'"{code}"' in source
