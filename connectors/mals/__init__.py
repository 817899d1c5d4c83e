"""MALS' own client database, connected to the hub both ways.

- :mod:`connectors.mals.schema`: MALS' tables as they exist, plus the connector's bookkeeping
  (outbox filled by triggers, sink offsets, inbox, id map).
- :mod:`connectors.mals.sink`: ``deliver.mals`` → MALS' ``referrals`` table, exactly once.
- :mod:`connectors.mals.source`: what MALS staff record → ``ingest.mals``, exactly once downstream.

``MAPPING.md`` says which column becomes which field, and what never leaves MALS.
"""
