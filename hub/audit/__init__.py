"""The audit trail: entry model, canonical encoding, hash chain, signed checkpoints, verification.

Pure logic over domain types (standard library, ``cryptography`` and ``structlog`` only); the
tables live in ``hub.adapters.audit_store`` and the Kafka loop wraps ``materialise``.

Threat model. Anyone who can write the hub database can edit an entry and recompute every hash
after it: the chain alone only catches accidents and clumsy edits. What stops a rewrite is the
Ed25519 signing key, held outside the database (``HUB_HOME/keys``, mode 0600): every checkpoint
signs (size, head), so a rewrite under a checkpoint fails verification unless the key leaked.
Removing the newest entries together with their checkpoints, or a rewrite by someone holding the
key, is caught only against a checkpoint exported earlier to an outside witness
(``hub audit checkpoint --export``, then ``hub audit verify --witness``). Entries after the last
checkpoint are not yet signed; the verifier reports how many.
"""
