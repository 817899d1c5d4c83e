"""Field-level encryption of the values the catalogue marks ``"hub.sensitive": true``.

How a ciphertext travels: the Avro value keeps its schema and carries **null** in every sensitive
field (every payload field is nullable, as a withheld field is); the blobs travel in the Kafka
record's ``hub.enc`` header, a map from the concrete field path (array items by index:
``needs.0.clinical_detail``) to the blob of :mod:`hub.crypto.blob`. The schemas, the golden wire
bytes and the policy engine are unchanged: the router opens the fields before it validates and
evaluates, and seals them again for each audience after the transform. A reader without the key
store sees nulls, never plaintext. Every delivered record also carries ``hub.key`` (key id, DEK
version, KEK version of its audience key) so that a view can refuse a record of an erased
subject even when it has no sensitive field.

Key names (what a DEK belongs to; blobs hold only a keyed hash of it):

- on ``ingest.*``: ``src:<source agency>|<scheme>|<local id>`` with audience ``ingest``;
- on ``deliver.<audience>``: ``aud:<audience>|<scheme>|<local id>``, the subject as that audience
  receives it (its own local id or its pseudonym), with the audience in the AAD.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import hashlib
import hmac
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from hub.crypto.blob import Context, DecryptError, KeyRef
from hub.crypto.keyring import Keyring
from hub.serde.catalogue import Catalogue

HEADER_ENC = "hub.enc"
HEADER_KEY = "hub.key"
INGEST = "ingest"

Headers = Sequence[tuple[str, bytes | None]] | None


def key_name(record: Mapping[str, Any]) -> tuple[str, str]:
    """(key name, audience) of a record: its audience's key once delivered, else its source's."""
    envelope = record["envelope"]
    subject = envelope["subject"]
    who = f"{subject['local_id_scheme']}|{subject['local_id']}"
    disclosure = record.get("disclosure")
    if disclosure:
        return f"aud:{disclosure['audience']}|{who}", disclosure["audience"]
    return f"src:{envelope['source_agency']}|{who}", INGEST


class FieldCrypto:
    def __init__(self, catalogue: Catalogue, keyring: Keyring) -> None:
        self.catalogue = catalogue
        self.keyring = keyring
        self._paths: dict[str, tuple[tuple[str, ...], ...]] = {}
        self._content_key = hmac.new(
            keyring._kid_secret, b"hub.content.v1", hashlib.sha256
        ).digest()

    def sensitive(self, event_type: str) -> tuple[tuple[str, ...], ...]:
        paths = self._paths.get(event_type)
        if paths is None:
            try:
                names = self.catalogue.sensitive_fields(event_type)
            except KeyError:
                names = []
            paths = self._paths[event_type] = tuple(tuple(p.split(".")) for p in names)
        return paths

    # -- writing -----------------------------------------------------------------------------------
    def seal(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
        """A copy of ``record`` with its sensitive values null, and the headers carrying them."""
        envelope = record["envelope"]
        name, audience = key_name(record)
        out = dict(record)
        blobs: dict[str, bytes] = {}
        for parts in self.sensitive(envelope["event_type"]):
            if out.get(parts[0]) is None:
                continue
            out[parts[0]] = copy.deepcopy(out[parts[0]])
            for path, holder, key in _locate(out, parts):
                value = holder[key]
                if value is None:
                    continue
                context = Context(name, path, envelope["event_id"], audience)
                blobs[path] = self.keyring.encrypt(encode_value(value), context)
                holder[key] = None
        headers: list[tuple[str, bytes]] = []
        if audience != INGEST or blobs:
            ref = self.keyring.current_ref(name)
            headers.append((HEADER_KEY, _ref_text(ref).encode()))
        if blobs:
            headers.append((HEADER_ENC, pack_map(blobs)))
        return out, headers

    def link(self, record: Mapping[str, Any], subject: str) -> None:
        """Record that the key of ``record`` belongs to hub subject ``subject`` (the router knows
        the subject; erasing it destroys every key linked to it)."""
        self.keyring.link(key_name(record)[0], subject)

    # -- reading -----------------------------------------------------------------------------------
    def open(self, record: dict[str, Any], headers: Headers) -> dict[str, Any]:
        """Put the plaintext back into ``record`` (in place) from its ``hub.enc`` header.
        ``DecryptError`` for anything that does not authenticate, a blob aimed at a field that
        is not sensitive, or a record whose key was erased."""
        found = dict((k, v) for k, v in headers or () if k in (HEADER_ENC, HEADER_KEY))
        key = found.get(HEADER_KEY)
        if key is not None and self.keyring.is_erased(_parse_ref(key)):
            raise DecryptError("the subject's key was erased", reason="key_erased")
        sealed = found.get(HEADER_ENC)
        if sealed is None:
            return record
        envelope = record["envelope"]
        name, audience = key_name(record)
        allowed = {
            path: (holder, k)
            for parts in self.sensitive(envelope["event_type"])
            for path, holder, k in _locate(record, parts)
        }
        for path, blob in unpack_map(sealed).items():
            target = allowed.get(path)
            if target is None or target[0][target[1]] is not None:
                raise DecryptError(f"encrypted field {path}: not a sensitive field left null",
                                   reason="bad_blob")  # fmt: skip
            context = Context(name, path, envelope["event_id"], audience)
            target[0][target[1]] = decode_value(self.keyring.decrypt(blob, context))
        return record

    def content_hash(self, value: bytes, record: Mapping[str, Any], headers: Headers) -> str:
        """What the router's duplicate check compares: the SHA-256 of the value alone for a
        record without encrypted fields; with them, a keyed hash (HMAC, no dictionary attack
        on a short sensitive value) of the value and the opened sensitive values, so that a
        re-publish (new nonces) is a duplicate and a change of a sensitive value is not."""
        if not any(k == HEADER_ENC for k, _ in headers or ()):
            return hashlib.sha256(value).hexdigest()
        mac = hmac.new(self._content_key, value, hashlib.sha256)
        for parts in self.sensitive(record["envelope"]["event_type"]):
            for path, holder, key in _locate(record, parts):
                if holder[key] is not None:
                    mac.update(b"\x00" + path.encode() + b"\x00" + encode_value(holder[key]))
        return mac.hexdigest()


def _locate(node: Any, parts: Sequence[str], prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(concrete path, holder, key) of every place ``parts`` reaches in ``node``."""
    if not isinstance(node, Mapping) or node.get(parts[0]) is None and len(parts) > 1:
        return
    head = f"{prefix}{parts[0]}"
    if len(parts) == 1:
        if parts[0] in node:
            yield head, node, parts[0]
        return
    child = node[parts[0]]
    if isinstance(child, list):
        for i, item in enumerate(child):
            yield from _locate(item, parts[1:], f"{head}.{i}.")
    else:
        yield from _locate(child, parts[1:], f"{head}.")


def _ref_text(ref: KeyRef) -> str:
    return f"{ref.kid}:{ref.dek_version}:{ref.kek_version}"


def _parse_ref(raw: bytes | None) -> KeyRef:
    try:
        kid, dek, kek = (raw or b"").decode("ascii").split(":")
        return KeyRef(kid, int(dek), int(kek))
    except (UnicodeDecodeError, ValueError):
        raise DecryptError("hub.key header is malformed", reason="bad_blob") from None


def header_ref(headers: Headers) -> KeyRef | None:
    """The ``hub.key`` reference of a record, if it has one."""
    for k, v in headers or ():
        if k == HEADER_KEY:
            return _parse_ref(v)
    return None


def header_blobs(headers: Headers) -> dict[str, bytes]:
    for k, v in headers or ():
        if k == HEADER_ENC:
            return unpack_map(v)
    return {}


# -- the header's map and the typed plaintext ---------------------------------------------------


def pack_map(blobs: Mapping[str, bytes]) -> bytes:
    out = [struct.pack(">H", len(blobs))]
    for path in sorted(blobs):
        raw = path.encode()
        out += [struct.pack(">H", len(raw)), raw, struct.pack(">I", len(blobs[path])), blobs[path]]
    return b"".join(out)


def unpack_map(data: bytes | None) -> dict[str, bytes]:
    try:
        data = data or b""
        (count,), at, out = struct.unpack_from(">H", data), 2, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">H", data, at)
            path = data[at + 2 : at + 2 + n].decode()
            at += 2 + n
            (m,) = struct.unpack_from(">I", data, at)
            blob = data[at + 4 : at + 4 + m]
            if len(blob) != m:
                raise ValueError("truncated")
            out[path] = blob
            at += 4 + m
        if at != len(data):
            raise ValueError("trailing bytes")
        return out
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise DecryptError(f"hub.enc header is malformed ({exc})", reason="bad_blob") from None


def encode_value(value: Any) -> bytes:
    if value is None:
        return b"n"
    if isinstance(value, list):  # an array of strings (codes, names): each item, length-prefixed
        items = [encode_value(v) for v in value]
        return b"L" + b"".join(struct.pack(">I", len(i)) + i for i in items)
    if isinstance(value, str):
        return b"s" + value.encode("utf-8")
    if isinstance(value, bool):
        return b"b1" if value else b"b0"
    if isinstance(value, int):
        return b"i" + str(value).encode()
    if isinstance(value, decimal.Decimal):
        return b"d" + str(value).encode()
    if isinstance(value, float):
        return b"f" + repr(value).encode()
    if isinstance(value, bytes):
        return b"y" + value
    if isinstance(value, dt.datetime):
        return b"T" + value.isoformat().encode()
    if isinstance(value, dt.date):
        return b"D" + value.isoformat().encode()
    raise TypeError(f"cannot encrypt a {type(value).__name__} field value")


def decode_value(data: bytes) -> Any:
    tag, body = data[:1], data[1:]
    try:
        if tag == b"n" and not body:
            return None
        if tag == b"L":
            items, at = [], 0
            while at < len(body):
                (n,) = struct.unpack_from(">I", body, at)
                if at + 4 + n > len(body):
                    raise ValueError("truncated list item")
                items.append(decode_value(body[at + 4 : at + 4 + n]))
                at += 4 + n
            return items
        if tag == b"s":
            return body.decode("utf-8")
        if tag == b"b" and body in (b"0", b"1"):
            return body == b"1"
        if tag == b"i":
            return int(body)
        if tag == b"d":
            return decimal.Decimal(body.decode())
        if tag == b"f":
            return float(body)
        if tag == b"y":
            return body
        if tag == b"T":
            return dt.datetime.fromisoformat(body.decode())
        if tag == b"D":
            return dt.date.fromisoformat(body.decode())
    except (ValueError, UnicodeDecodeError, decimal.InvalidOperation, struct.error):
        pass
    raise DecryptError("encrypted field: plaintext of an unknown form", reason="bad_blob")
