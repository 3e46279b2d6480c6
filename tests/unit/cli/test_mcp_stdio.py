"""`agentmem mcp` without a key: a message on stderr that says what to set, nothing on stdout, exit 2."""

from __future__ import annotations

from cli.mcp_stdio import serve_stdio


def test_without_a_key_it_says_what_to_set_and_exits_2(capsys):
    assert serve_stdio("http://127.0.0.1:8000", None) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "AGENTMEM_API_KEY" in err
