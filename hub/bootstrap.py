"""The one place that reads settings and wires adapters to loops; CLI and web are shells."""

from __future__ import annotations

from functools import lru_cache

from hub.settings import Settings


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings()
