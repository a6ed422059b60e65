"""Bookkeeping of the schemathesis run, printed at the end of the pytest session."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class FuzzStats:
    operations: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    per_operation: Counter[str] = field(default_factory=Counter)
    detail: Counter[tuple[str, int]] = field(default_factory=Counter)

    def record(self, operation: str, status: int) -> None:
        self.statuses[status] += 1
        self.per_operation[operation] += 1
        self.detail[(operation, status)] += 1

    def as_data(self) -> list[tuple[str, int, int]]:
        """The counts as plain data, for a pytest-xdist worker to hand to the controller."""
        return [(operation, status, n) for (operation, status), n in self.detail.items()]

    def merge(self, *, operations: int, data: list[tuple[str, int, int]]) -> None:
        self.operations = max(self.operations, operations)
        for operation, status, n in data:
            self.statuses[status] += n
            self.per_operation[operation] += n
            self.detail[(operation, status)] += n

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())

    def summary(self) -> str:
        by_status = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return (
            f"schemathesis: {self.cases} cases against {len(self.per_operation)} of "
            f"{self.operations} operations (by status: {by_status})"
        )


FUZZ = FuzzStats()
