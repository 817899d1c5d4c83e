"""Field-level envelope encryption and crypto-shredding (RELIABILITY.md A5, B.4; DESIGN 8).

Pure logic over two small ports: :class:`KeyStore` (the KEK: a local file, a cloud KMS) and
:class:`DekStore` (wrapped DEKs, counters, key links, erasure tombstones); their adapters live in
:mod:`hub.adapters.key_store`.
"""

from hub.crypto.blob import Context, DecryptError, KeyRef
from hub.crypto.fields import HEADER_ENC, HEADER_KEY, FieldCrypto, key_name
from hub.crypto.keyring import DekStore, Keyring, KeyStore, KeyStoreUnavailable, StoredDek

__all__ = [
    "HEADER_ENC",
    "HEADER_KEY",
    "Context",
    "DecryptError",
    "DekStore",
    "FieldCrypto",
    "KeyRef",
    "KeyStore",
    "KeyStoreUnavailable",
    "Keyring",
    "StoredDek",
    "key_name",
]
