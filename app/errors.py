"""Errors are values: a code, a path and a message, the same shape in the API, the CLI,
the import report and the admin (``{"errors": [{"path", "code", "message"}]}``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Problem:
    path: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class KaipiaoError(Exception):
    """Base for domain errors that carry one or more problems."""

    def __init__(self, problems: Iterable[Problem] | Problem):
        self.problems: list[Problem] = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    def as_dict(self) -> dict[str, list[dict[str, str]]]:
        return {"errors": [p.as_dict() for p in self.problems]}


class ValidationFailed(KaipiaoError):
    """Input that does not fit the contract (bad order, bad rule, bad form)."""


class InvalidTransition(KaipiaoError):
    """A lifecycle transition from the wrong state."""


class Refused(KaipiaoError):
    """An action that cannot be taken now (the row is in another state, it does not exist).
    ``code`` and ``params`` let a user interface word it in its own language."""

    def __init__(self, code: str, message: str, **params: object) -> None:
        super().__init__(Problem("", code, message))
        self.code = code
        self.params = params


class Forbidden(KaipiaoError):
    """The caller may not touch this data (a merchant-scoped user naming another merchant's
    order, shop or invoice); nothing is written. The API answers 403."""
