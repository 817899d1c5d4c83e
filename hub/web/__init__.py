"""The web shell over the hub: the practitioners' portal (``hub web serve``).

``create_app(WebConfig.from_settings(settings))`` builds the FastAPI app; see :mod:`hub.web.app`.
"""

from hub.web.app import create_app
from hub.web.config import WebConfig

__all__ = ["WebConfig", "create_app"]
