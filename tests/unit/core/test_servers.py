"""The embedded PostgreSQL's buffer cache follows the machine's memory, within bounds."""

from __future__ import annotations

from core.servers import shared_buffers_mb


def test_a_quarter_of_the_memory_between_256_mb_and_2_gb():
    assert shared_buffers_mb(4096) == 1024
    assert shared_buffers_mb(512) == 256        # a small machine still gets PostgreSQL's usual floor
    assert shared_buffers_mb(64 * 1024) == 2048  # a big one is capped: the OS page cache does the rest


def test_this_machine_gets_a_size_within_the_bounds():
    assert 256 <= shared_buffers_mb() <= 2048
