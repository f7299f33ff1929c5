"""What a batch service did, counted by kind ("issued": 48, "retry": 2, ...): what the jobs
return and the benchmarks and tests read."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Outcome:
    counts: dict[str, int] = field(default_factory=dict)

    def bump(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def add(self, other: Outcome, prefix: str = "") -> None:
        for key, n in other.counts.items():
            self.bump(f"{prefix}{key}", n)
