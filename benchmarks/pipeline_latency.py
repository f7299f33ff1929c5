"""The pipeline benchmark with a provider as slow as a real one: every call answers after
300 ms and an accepted invoice is issued 2 s later (the sandbox's --latency-ms and
--issue-delay-ms). The pipeline must not wait on the provider: targets ≥ 1,000,000 invoices/h
and p95 arrival → issued ≤ 3 s at 50 orders/s on this machine."""

from __future__ import annotations

from pipeline import main

if __name__ == "__main__":
    main(name="pipeline_latency", latency_ms=300, issue_delay_ms=2000)
