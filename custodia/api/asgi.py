"""ASGI entry point for servers: ``custodia.api.asgi:app_factory`` (a factory)."""

from __future__ import annotations

from litestar import Litestar

from custodia.api.app import create_app
from custodia.core.logging import configure_logging
from custodia.core.settings import load_settings


def app_factory() -> Litestar:
    """Build the app from the environment (each server worker process calls this)."""
    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)
