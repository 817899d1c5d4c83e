"""The exactly-once harness of RELIABILITY.md B.0: workload, oracle, checker, fault injector."""
