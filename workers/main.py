"""Entry module for `dramatiq workers.main`: configure logging, then declare the actors."""

from core.logging import configure_logging
from core.settings import get_settings

_settings = get_settings()
configure_logging(_settings.log_level, _settings.log_json, process="worker")

from workers import actors  # noqa: E402,F401  (declares the actors on the broker)
