"""Apply the Alembic migrations programmatically (`agentmem migrate`, `agentmem up`, tests)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


class _Applied(logging.Handler):
    """Collects the revisions Alembic reports applying (its `Running upgrade A -> B, …` lines)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.revisions: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            logging.getLogger("alembic").handle(record)  # what matters still reaches the log
        message = record.getMessage()
        if message.startswith("Running upgrade"):
            self.revisions.append(message.split("->", 1)[1].split(",", 1)[0].strip())


def upgrade_database(revision: str = "head") -> list[str]:
    """Bring the schema to `revision` (idempotent); the revisions applied, in order (none: already there).
    Alembic's own lines are kept for DEBUG: at INFO a first start would print one per migration."""
    applied = _Applied()
    migration_log = logging.getLogger("alembic.runtime.migration")
    migration_log.addHandler(applied)
    if not log.isEnabledFor(logging.DEBUG):
        for name in ("alembic.runtime.migration", "alembic.runtime.plugins"):
            logging.getLogger(name).setLevel(logging.WARNING)
        migration_log.setLevel(logging.INFO)
        migration_log.propagate = False
    try:
        command.upgrade(alembic_config(), revision)
    finally:
        migration_log.removeHandler(applied)
        migration_log.propagate = True
    return applied.revisions
