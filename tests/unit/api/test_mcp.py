"""The /mcp mount: where it is, what it keeps out of the OpenAPI document, and its DNS-rebinding setting."""

from __future__ import annotations

from api.app import create_app
from api.mcp import PATH, _security


def test_mcp_is_routed_but_not_in_the_openapi_document():
    app = create_app()
    assert PATH in {getattr(route, "path", None) for route in app.routes}
    assert PATH not in app.openapi()["paths"]
    assert app.state.mcp.manager.stateless


def test_the_host_check_is_off_unless_hosts_are_configured(override_settings):
    assert not _security().enable_dns_rebinding_protection
    override_settings(mcp_allowed_hosts="mem.example.com, 127.0.0.1:*", mcp_allowed_origins="https://app.example.com")
    security = _security()
    assert security.enable_dns_rebinding_protection
    assert security.allowed_hosts == ["mem.example.com", "127.0.0.1:*"]
    assert security.allowed_origins == ["https://app.example.com"]
