"""core/db.py, the part without a server: URL rewriting for the asyncpg driver."""

from __future__ import annotations

import pytest

from core.db import async_url


@pytest.mark.parametrize("url", ["postgresql://u:p@h:5432/db", "postgres://u:p@h:5432/db",
                                 "postgresql+asyncpg://u:p@h:5432/db"])
def test_async_url_points_any_postgres_url_at_asyncpg(url):
    assert async_url(url) == "postgresql+asyncpg://u:p@h:5432/db"


def test_async_url_rejects_other_databases_without_echoing_the_password():
    with pytest.raises(ValueError) as exc:
        async_url("mysql://admin:s3cret@db.example:3306/app")
    assert "s3cret" not in str(exc.value)
    assert "db.example:3306/app" in str(exc.value)
