"""Partner connectors: one package per partner system; `_template` is what you copy.

``PARTNERS`` is the registry behind ``hub connector run <partner>``: the name of a file
connector and where its :class:`connectors.framework.Connector` lives. Adding a partner is one
line here (see ``connectors/README.md``). The MALS database connectors are not file connectors:
they have commands of their own (``mals-sink``, ``mals-source``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connectors.framework import Connector

PARTNERS: dict[str, str] = {
    "police": "connectors.police:CONNECTOR",
    "prison": "connectors.prison:CONNECTOR",
    "probation-crc": "connectors.probation:CRC",
    "probation-nps": "connectors.probation:NPS",
    "safety-house": "connectors.safety_house:SAFETY_HOUSE",
    "hague-municipality": "connectors.safety_house:MUNICIPALITY",
    "hague-aftercare": "connectors.safety_house:AFTERCARE",
    "eri": "connectors.eri:CONNECTOR",
    "template": "connectors._template:CONNECTOR",
}


def connector(name: str) -> Connector:
    """The registered connector called ``name`` (imported only when asked for)."""
    try:
        module, attribute = PARTNERS[name].split(":")
    except KeyError:
        raise KeyError(f"no connector {name!r} (known: {', '.join(sorted(PARTNERS))})") from None
    return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]
