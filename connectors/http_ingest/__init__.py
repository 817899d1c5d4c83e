"""The generic HTTP ingest API, for partners without a Kafka client.

- :mod:`connectors.http_ingest.tokens`: one bearer token per agency, stored as a SHA-256 hash.
- :mod:`connectors.http_ingest.documents`: one JSON document per event → an event record, with
  errors naming the field.
- :mod:`connectors.http_ingest.app`: the FastAPI app (``hub ingest serve``); it answers 202 only
  once the broker has acknowledged every event of the request.

``README.md`` here describes the document format and the answers.
"""
