"""``python -m tests.harness.router_main --slot N``: ``hub router run`` (the real CLI command, in a
process of its own) with test-only faults switched on by environment variables. Nothing here is
importable by the hub itself; production code has no fault hooks.

- ``HUBTEST_FAIL_EVERY_N_BATCHES=n``: in every n-th batch that has input records, the policy engine
  raises half-way through the batch (after some outputs were produced into the open transaction),
  as a policy-engine bug would (RELIABILITY.md EO-7). The retry of that batch is the next batch,
  so it goes through.
- ``HUBTEST_DISABLE_REWIND=1``: ``TransactionalBus.rewind`` does nothing: the mutation that EO-7's
  checker must catch (an aborted batch is then skipped, not reprocessed).
- ``HUBTEST_COMMIT_HOLD_DIR=dir``, ``HUBTEST_COMMIT_HOLD_EVERY=k``, ``HUBTEST_COMMIT_HOLD_TIMES=m``:
  the first ``commit_transaction()`` of every k-th transaction (m times) first writes
  ``dir/commit-<n>.pending`` and waits for ``dir/commit-<n>.go``, so the test can stop the broker
  while that commit is in flight (EO-4: instead of a proxy that spots EndTxn, the producer says
  when it is about to send it). ``dir/release`` ends the holds.
- ``HUBTEST_COMMIT_TIMEOUT_S=t``: ``commit_transaction`` waits at most t seconds per attempt (the
  router asks for 30 s; with 3 attempts a commit is in doubt only after about 90 s), so the
  "recreate the producer" path is reached while the broker is still stopped.

The variables use the ``HUBTEST_`` prefix, not ``HUB_``, so the hub's settings never see them.
"""

from __future__ import annotations

import os
import sys


class InjectedFault(RuntimeError):
    """The policy-engine failure EO-7 injects."""


def install() -> dict[str, int]:
    from hub import router as router_module
    from hub.adapters import kafka_txn

    counters = {"batches": 0, "injected": 0}
    every = int(os.environ.get("HUBTEST_FAIL_EVERY_N_BATCHES", "0") or 0)
    if every > 0:
        real_evaluate = router_module.evaluate
        real_run_batch = router_module.Router.run_batch
        armed = {"at": -1, "calls": 0}

        def run_batch(self, bus, records, extra=()):  # type: ignore[no-untyped-def]
            if records:
                counters["batches"] += 1
                if counters["batches"] % every == 0:
                    # fail at the evaluation for the middle record of the batch
                    armed["at"] = max(1, len(records) // 2) * len(self.audiences)
                    armed["calls"] = 0
            try:
                return real_run_batch(self, bus, records, extra)
            finally:
                armed["at"] = -1

        def evaluate(event, audience, state, agreements):  # type: ignore[no-untyped-def]
            if armed["at"] >= 0:
                armed["calls"] += 1
                if armed["calls"] >= armed["at"]:
                    armed["at"] = -1
                    counters["injected"] += 1
                    print(f"hubtest: injected policy-engine fault #{counters['injected']}",
                          file=sys.stderr, flush=True)  # fmt: skip
                    raise InjectedFault("injected policy-engine fault (EO-7)")
            return real_evaluate(event, audience, state, agreements)

        router_module.Router.run_batch = run_batch  # type: ignore[method-assign]
        router_module.evaluate = evaluate  # type: ignore[assignment]
    hold_dir = os.environ.get("HUBTEST_COMMIT_HOLD_DIR")
    commit_timeout = float(os.environ.get("HUBTEST_COMMIT_TIMEOUT_S", "0") or 0)
    if hold_dir or commit_timeout:
        _hook_commits(kafka_txn, counters, hold_dir, commit_timeout)
    if os.environ.get("HUBTEST_DISABLE_REWIND") == "1":

        def no_rewind(self) -> None:  # type: ignore[no-untyped-def]
            print("hubtest: rewind skipped (mutation)", file=sys.stderr, flush=True)

        kafka_txn.TransactionalBus.rewind = no_rewind  # type: ignore[method-assign]
    return counters


def _hook_commits(
    kafka_txn: object, counters: dict[str, int], hold_dir: str | None, commit_timeout: float
) -> None:
    import time
    from pathlib import Path

    base = kafka_txn.Producer  # type: ignore[attr-defined]
    every = int(os.environ.get("HUBTEST_COMMIT_HOLD_EVERY", "5") or 5)
    times = int(os.environ.get("HUBTEST_COMMIT_HOLD_TIMES", "1") or 1)
    counters.update(transactions=0, held=0)

    class HookedProducer(base):  # type: ignore[misc, valid-type]
        _first_commit = False

        def begin_transaction(self, *args):  # type: ignore[no-untyped-def]
            counters["transactions"] += 1
            self._first_commit = True
            return super().begin_transaction(*args)

        def commit_transaction(self, *args):  # type: ignore[no-untyped-def]
            n = counters["transactions"]
            held = 0
            if (hold_dir and self._first_commit and n % every == 0
                    and counters["held"] < times
                    and not (Path(hold_dir) / "release").exists()):  # fmt: skip
                counters["held"] += 1
                held = counters["held"]
                pending = Path(hold_dir) / f"commit-{held}.pending"
                go = Path(hold_dir) / f"commit-{held}.go"
                pending.touch()
                print(f"hubtest: commit of transaction {n} held ({pending.name})",
                      file=sys.stderr, flush=True)  # fmt: skip
                deadline = time.monotonic() + 60
                release = Path(hold_dir) / "release"
                while not go.exists() and not release.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
            self._first_commit = False
            if commit_timeout and args:
                args = (min(float(args[0]), commit_timeout), *args[1:])
            started = time.monotonic()
            outcome = "returned"
            try:
                return super().commit_transaction(*args)
            except BaseException:
                outcome = "raised"
                raise
            finally:
                if held:
                    took = time.monotonic() - started
                    print(f"hubtest: held commit {held} {outcome} after {took:.2f}s",
                          file=sys.stderr, flush=True)  # fmt: skip

    kafka_txn.Producer = HookedProducer  # type: ignore[attr-defined]


def main(argv: list[str]) -> None:
    install()
    from hub import cli

    sys.argv = ["hub", "router", "run", *argv]
    cli.main()  # the console script's entry point: logging set-up, one-line errors, exit codes


if __name__ == "__main__":
    main(sys.argv[1:])
