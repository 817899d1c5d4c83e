"""IN-1 (RELIABILITY.md B.2): the decoder fuzz.

Mutated Confluent-framed payloads of every event schema of the catalogue go through
``AvroCodec.decode`` (and so ``wire.unframe`` + ``wire.decode_body``) in a **subprocess**, with a
per-input watchdog in this process: the worker stamps the index and start time of each input into
a small shared file; an input still running after ``WATCHDOG_S`` is a trip (the worker is killed,
the input recorded, and the run resumes after it).

Mutations, in equal shares (input ``i`` is a pure function of (seed, i) and a finding carries
the value's hex, so it can be replayed): 1-4 byte flips, truncation, 0-64 random bytes (raw, or
behind a valid header), 1-8 inserted bytes, 1-16 trailing bytes after an intact value, and a
schema-id swap (a valid body framed with another, an unknown or a non-event schema id: type
confusion).

Pass (A6 contract, as OSS-Fuzz holds Avro to its declared exceptions):
- 0 exceptions other than ``SerdeError``, and each ``SerdeError`` names topic/partition/offset
  and a known reason code;
- 0 watchdog trips;
- every payload that decodes then goes through ``Router.process`` (validation, policy, apply,
  re-encode, with an in-memory state): it is routed or rejected to the DLQ with a reason header,
  and nothing raises;
- 100 % of the trailing-byte cases are rejected with ``trailing_bytes``.

Size: ``HUB_FUZZ_N`` inputs (default 100,000, the CI tier; about 10 s on 2 cores); the soak
tier is ``HUB_FUZZ_N=1000000``. ``HUB_FUZZ_SEED`` changes the seed (default fixed, printed).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FUZZ_N = int(os.environ.get("HUB_FUZZ_N", "100000"))
FUZZ_SEED = int(os.environ.get("HUB_FUZZ_SEED", "20140601"))
WATCHDOG_S = 2.0
CHUNK = 5_000
KINDS = ("flip", "truncate", "random", "insert", "trailing", "swap")
SERDE_REASONS = {
    "null_value", "empty_value", "oversize", "bad_magic", "truncated", "trailing_bytes",
    "invalid_avro", "invalid_record", "unknown_schema", "unknown_event_type", "invalid_schema",
    "event_type_mismatch",
}  # fmt: skip
STAMP = struct.Struct("<qd")  # index being decoded (-1: idle), its start (time.monotonic)
TOPIC_PARTITION = 3


# -- the worker (runs in a subprocess: ``python test_decode_fuzz.py --start ... --end ...``) ----


class MemoryRegistry:
    """A schema registry in a dict: every event schema, plus non-event and invalid schemas so a
    flipped or swapped schema id can land on them (type confusion)."""

    def __init__(self) -> None:
        self.by_id: dict[int, str] = {}
        self.ids: dict[tuple[str, str], int] = {}

    def register(self, subject: str, schema: str) -> int:
        key = (subject, schema)
        if key not in self.ids:
            self.ids[key] = len(self.by_id) + 1
            self.by_id[self.ids[key]] = schema
        return self.ids[key]

    def schema_by_id(self, schema_id: int) -> str:
        from hub.domain.errors import SerdeError

        if schema_id not in self.by_id:
            raise SerdeError(f"unknown schema id {schema_id}", reason="unknown_schema")
        return self.by_id[schema_id]

    def latest(self, subject: str) -> tuple[int, str] | None:  # pragma: no cover - unused
        return None

    def incompatibilities(self, subject: str, schema: str) -> list[str]:  # pragma: no cover
        return []


class ForgetfulSeen:
    """The router's seen-events store that remembers nothing: every mutant is routed afresh
    instead of stopping at ``conflicting_duplicate`` because a sibling shared its event_id."""

    def get(self, event_id: str) -> None:
        return None

    def put(self, *args: Any) -> None:
        pass


class Fuzzer:
    def __init__(self, seed: int) -> None:
        sys.path.insert(0, str(REPO))
        from hub.policy import MemoryState, PseudonymKeys, load_agreements
        from hub.ports import InRecord
        from hub.publisher import Publisher
        from hub.router import Router, RouterConfig
        from hub.serde.catalogue import Catalogue
        from hub.serde.codec import AvroCodec
        from hub.topics import Topics
        from tests.factory import EventFactory

        self.seed = seed
        catalogue = Catalogue.load()
        agreements = load_agreements(None, catalogue)
        registry = MemoryRegistry()
        self.codec = AvroCodec(catalogue, registry)
        self.codec.register_all()
        # schema ids that are not catalogue events: a shared type, a primitive, a foreign
        # record, and text that is not valid Avro at all
        address = catalogue.named_type("hub.events.Address")
        registry.register("hub.events.Address", json.dumps(address))
        registry.register("plain-string", '"string"')
        registry.register("other.Thing", json.dumps(
            {"type": "record", "name": "other.Thing", "fields": [{"name": "x", "type": "long"}]}
        ))  # fmt: skip
        registry.register("broken", '{"type": "record", "name": "Broken", "fields": [{"name": 1}]}')
        self.max_id = len(registry.by_id)
        self.topics = Topics()
        # seeds: every event type, published by the agency the agreements name most often as
        # its source (so the router's policy paths run), two events each
        named: Counter[tuple[str, str]] = Counter(
            (event_type, source) for (event_type, source, _), _c in agreements.entries()
        )
        sources: dict[str, str] = {}
        for (event_type, source), _n in named.most_common():
            sources.setdefault(event_type, source)
        jurisdiction = {a.id: a.jurisdiction for a in agreements.agencies()}
        factory = EventFactory(catalogue, seed=seed)
        self.seeds: list[tuple[str, bytes, bytes]] = []  # (agency, key, value)
        for event_type in catalogue.event_types():
            agency = sources.get(event_type, "police")
            publisher = Publisher(
                agency=agency, source_system=f"{agency}-fuzz", jurisdiction=jurisdiction[agency],
                codec=self.codec, sink=None,  # type: ignore[arg-type]
            )  # fmt: skip
            for k in range(2):
                record = factory.event(publisher, event_type, f"{event_type}:{k}", f"FZ{k}")
                self.seeds.append((agency, f"FZ{k}".encode(), self.codec.encode(record)))
        self.router = Router(
            topics=self.topics, codec=self.codec, agreements=agreements,
            state=MemoryState(catalogue), keys=PseudonymKeys(b"fuzz-master-key-0123456789abcdef"),
            seen=ForgetfulSeen(), config=RouterConfig(storm_threshold=10**12),
        )  # fmt: skip
        self.in_record = InRecord

    def mutant(self, index: int) -> tuple[str, str, bytes, bytes]:
        """(kind, agency, key, value) of input ``index``: a pure function of (seed, index)."""
        rng = random.Random(self.seed * 1_000_003 + index)
        kind = KINDS[index % len(KINDS)]
        agency, key, original = self.seeds[rng.randrange(len(self.seeds))]
        value = bytearray(original)
        if kind == "flip":
            for _ in range(rng.randint(1, 4)):
                value[rng.randrange(len(value))] = rng.randrange(256)
        elif kind == "truncate":
            del value[rng.randrange(len(value)) :]
        elif kind == "random":
            noise = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
            if rng.random() < 0.5:
                value = bytearray(noise)
            else:  # behind a valid header, so the Avro decoder itself gets random input
                value = bytearray(original[:5] + noise)
        elif kind == "insert":
            at = rng.randrange(len(value) + 1)
            value[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == "trailing":
            value += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == "swap":
            value[1:5] = struct.pack(">I", rng.randint(0, self.max_id + 2))
        return kind, agency, key, bytes(value)

    def run(self, start: int, end: int, skip: set[int], stamp: mmap.mmap, out: Any) -> None:
        from hub.domain.errors import SerdeError

        result = _empty_result()
        for index in range(start, end):
            if index in skip:
                continue
            kind, agency, key, value = self.mutant(index)
            topic = self.topics.ingest(agency)
            where = (topic, TOPIC_PARTITION, index)
            began = time.monotonic()
            stamp[:] = STAMP.pack(index, began)
            self._one(result, index, kind, key, value, where, SerdeError)
            took = time.monotonic() - began
            stamp[:] = STAMP.pack(-1, 0.0)
            result["max_s"] = max(result["max_s"], took)
            if took > WATCHDOG_S:
                result["slow"].append({"index": index, "kind": kind, "seconds": took})
            if (index + 1) % CHUNK == 0 or index == end - 1:
                result["next"] = index + 1
                out.write(json.dumps(result) + "\n")
                out.flush()
                result = _empty_result()

    def _one(self, result: dict[str, Any], index: int, kind: str, key: bytes, value: bytes,
             where: tuple[str, int, int], serde_error: type) -> None:  # fmt: skip
        topic, partition, offset = where
        result["inputs"] += 1
        result["by_kind"][kind] = result["by_kind"].get(kind, 0) + 1

        def finding(problem: str) -> None:
            result["findings"].append(
                {"index": index, "kind": kind, "problem": problem[:500], "value": value.hex()}
            )

        try:
            self.codec.decode(value, topic, partition, offset)
        except serde_error as exc:
            reason = exc.reason
            _bump(result["decode_reasons"], f"{kind}:{reason}")
            if reason not in SERDE_REASONS:
                finding(f"SerdeError with unknown reason {reason!r}: {exc}")
            if (exc.topic, exc.partition, exc.offset) != where:
                finding(f"SerdeError without its position: {exc.topic}[{exc.partition}]@"
                        f"{exc.offset}: {exc}")  # fmt: skip
            if kind == "trailing":
                if reason == "trailing_bytes":
                    result["trailing_rejected"] += 1
                else:
                    finding(f"trailing bytes rejected as {reason!r}, not trailing_bytes")
            return
        except BaseException as exc:  # noqa: BLE001 - the finding this test exists for
            finding(f"{type(exc).__name__} escaped decode(): {exc!r}")
            return
        if kind == "trailing":
            finding("trailing bytes accepted")
        result["decoded"] += 1
        # what decodes must then be routed or rejected with a reason, without raising
        record = self.in_record(topic, partition, offset, key, value)
        try:
            outputs = self.router.process(record)
        except BaseException as exc:  # noqa: BLE001
            finding(f"{type(exc).__name__} escaped Router.process(): {exc!r}")
            return
        dlq = [o for o in outputs if o.topic.endswith(".dlq")]
        if dlq:
            headers = dict(dlq[0].headers)
            reason = headers.get("hub.error.reason", b"").decode()
            if not reason or len(dlq) != 1:
                finding(f"DLQ output without a reason header: {headers}")
            _bump(result["router_reasons"], reason or "<none>")
        elif any(o.topic == self.topics.audit and b'"published"' in o.value for o in outputs):
            result["routed"] += 1
        else:
            finding(f"neither routed nor rejected: {len(outputs)} outputs")


def _empty_result() -> dict[str, Any]:
    return {
        "inputs": 0, "decoded": 0, "routed": 0, "trailing_rejected": 0, "max_s": 0.0,
        "by_kind": {}, "decode_reasons": {}, "router_reasons": {}, "findings": [], "slow": [],
        "next": 0,
    }  # fmt: skip


def _bump(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


def _worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--start", type=int, required=True)
    parser.add_argument("--end", type=int, required=True)
    parser.add_argument("--skip", default="")
    parser.add_argument("--stamp", required=True)
    parser.add_argument("--hang-at", type=int, default=-1, help="self-test of the watchdog")
    args = parser.parse_args(argv)
    import logging

    import structlog

    # the router logs every rejection; stdout is this worker's result channel
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    fuzzer = Fuzzer(args.seed)
    if args.hang_at >= 0:
        decode = fuzzer.codec.decode

        def hanging(value: Any, topic: Any = None, partition: Any = None, offset: Any = None):  # type: ignore[no-untyped-def]
            if offset == args.hang_at:
                time.sleep(3600)
            return decode(value, topic, partition, offset)

        fuzzer.codec.decode = hanging  # type: ignore[method-assign]
    skip = {int(s) for s in args.skip.split(",") if s}
    with open(args.stamp, "r+b") as handle:
        stamp = mmap.mmap(handle.fileno(), STAMP.size)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        fuzzer.run(args.start, args.end, skip, stamp, sys.stdout)


# -- the parent: watchdog and bookkeeping -------------------------------------------------------


def run_fuzz(n: int, seed: int, hang_at: int = -1, budget_s: float = 600.0) -> dict[str, Any]:
    """Fuzz inputs [0, n) in worker subprocesses under the per-input watchdog; merged results."""
    total = _empty_result()
    total["trips"] = []
    total["crashes"] = []
    skip: list[int] = []
    start = 0
    deadline = time.monotonic() + budget_s
    with tempfile.NamedTemporaryFile(prefix="hub-fuzz-stamp-") as stamp_file:
        stamp_file.write(STAMP.pack(-1, 0.0))
        stamp_file.flush()
        stamp = mmap.mmap(stamp_file.fileno(), STAMP.size)
        while start < n:
            stamp[:] = STAMP.pack(-1, 0.0)
            cmd = [
                sys.executable, __file__, "--seed", str(seed), "--start", str(start),
                "--end", str(n), "--skip", ",".join(map(str, skip)), "--stamp", stamp_file.name,
                "--hang-at", str(hang_at),
            ]  # fmt: skip
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
                "PYTHONPATH", "")])}  # fmt: skip
            with tempfile.TemporaryFile("w+") as errors:  # a file: a full pipe would block
                worker = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True,
                                          env=env, cwd=REPO)  # fmt: skip
                start = _watch(worker, stamp, total, skip, deadline, start, errors)
    return total


def _watch(worker: subprocess.Popen[str], stamp: mmap.mmap, total: dict[str, Any],
           skip: list[int], deadline: float, start: int, errors: Any) -> int:  # fmt: skip
    """Follow one worker; return where the next worker must start (the end when done)."""
    import selectors

    assert worker.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(worker.stdout, selectors.EVENT_READ)
    resume = start
    try:
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"fuzz run over its time budget at input {resume}")
            if selector.select(timeout=0.1):
                line = worker.stdout.readline()
                if not line:  # the worker exited
                    code = worker.wait()
                    if code != 0:
                        index, _ = STAMP.unpack(stamp[:])
                        errors.seek(0)
                        total["crashes"].append(
                            {"index": index, "code": code, "stderr": errors.read()[-2000:]}
                        )
                        if index < 0:
                            raise AssertionError(f"fuzz worker failed: {total['crashes'][-1]}")
                        skip.append(index)
                        return resume
                    return 1 << 62
                if line.strip() != "ready":
                    _merge(total, json.loads(line))
                    resume = total["next"]
                continue
            index, began = STAMP.unpack(stamp[:])
            if index >= 0 and time.monotonic() - began > WATCHDOG_S:
                # re-read: the stamp may have moved on between the two reads
                again, began_again = STAMP.unpack(stamp[:])
                if (again, began_again) == (index, began):
                    worker.kill()
                    worker.wait()
                    total["trips"].append({"index": index, "after_s": time.monotonic() - began})
                    skip.append(index)
                    return resume
    finally:
        selector.close()
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def _merge(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key in ("inputs", "decoded", "routed", "trailing_rejected"):
        total[key] += part[key]
    total["max_s"] = max(total["max_s"], part["max_s"])
    for key in ("by_kind", "decode_reasons", "router_reasons"):
        counter = Counter(total[key])
        counter.update(part[key])
        total[key] = dict(counter)
    total["findings"] += part["findings"]
    total["slow"] += part["slow"]
    total["next"] = part["next"]


# -- the tests ------------------------------------------------------------------------------------


def test_decoder_fuzz_only_serde_errors_no_hangs_and_decoded_input_is_routed_or_rejected() -> None:
    began = time.monotonic()
    result = run_fuzz(FUZZ_N, FUZZ_SEED)
    elapsed = time.monotonic() - began
    summary = {k: result[k] for k in ("inputs", "decoded", "routed", "trailing_rejected", "max_s",
                                      "by_kind", "router_reasons")}  # fmt: skip
    print(f"\nIN-1 fuzz: seed {FUZZ_SEED}, {FUZZ_N} inputs in {elapsed:.1f}s:", json.dumps(summary))
    findings = result["findings"]
    assert not result["crashes"], f"the fuzz worker died: {result['crashes'][:3]}"
    assert not result["trips"], f"watchdog trips (> {WATCHDOG_S}s): {result['trips'][:5]}"
    assert not result["slow"], f"inputs slower than {WATCHDOG_S}s: {result['slow'][:5]}"
    assert not findings, (
        f"{len(findings)} findings (replay: HUB_FUZZ_SEED={FUZZ_SEED}, index): "
        + json.dumps(findings[:5], indent=1)
    )
    assert result["inputs"] == FUZZ_N
    per_kind = result["by_kind"]
    assert set(per_kind) == set(KINDS) and min(per_kind.values()) >= FUZZ_N // len(KINDS) - 1
    assert result["trailing_rejected"] == per_kind["trailing"], "100% of trailing bytes rejected"
    # the fuzz really reached the decoder and the router, not only the wire header
    reasons = {key.split(":")[1] for key in result["decode_reasons"]}
    assert {"bad_magic", "truncated", "invalid_avro", "trailing_bytes", "unknown_schema",
            "unknown_event_type", "empty_value"} <= reasons, reasons  # fmt: skip
    assert result["decoded"] > 0 and result["router_reasons"], "no mutant got past decode"


def test_watchdog_trips_on_a_hanging_input_and_the_run_resumes_after_it() -> None:
    """The watchdog itself: input 7 hangs (injected), the run records one trip at 7 and still
    covers every other input."""
    result = run_fuzz(20, FUZZ_SEED, hang_at=7, budget_s=60)
    assert [t["index"] for t in result["trips"]] == [7]
    assert result["inputs"] == 19
    assert not result["findings"] and not result["crashes"]


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
