"""What a batch service did, counted by kind ("issued": 48, "retry": 2, ...): what the jobs
return and the benchmarks and tests read."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Outcome:
    counts: dict[str, int] = field(default_factory=dict)
    # Invoices the provider accepted and has not settled yet (to be asked again), and when the
    # provider says it issued the ones it did: what a follow-up poll is planned from.
    waiting: list[int] = field(default_factory=list)
    issued_at: dict[int, datetime] = field(default_factory=dict)
    sent_at: float | None = None  # when the provider answered a sending (epoch seconds)

    def bump(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def add(self, other: Outcome, prefix: str = "") -> None:
        for key, n in other.counts.items():
            self.bump(f"{prefix}{key}", n)
        self.waiting += other.waiting
        self.issued_at.update(other.issued_at)
