"""The hub's Confluent-compatible schema registry.

``compat``: Avro parsing, canonical forms and compatibility levels (pure).
``service``: ``RegistryService``, the registry's rules over a ``RegistryStore``.
``api``: the Confluent REST API (FastAPI); ``server``: running it with uvicorn.
The SQL store is ``hub.adapters.registry_store``.
"""
