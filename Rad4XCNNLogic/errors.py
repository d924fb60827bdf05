"""Errors and failure records shared by every stage.

Every bad input ends in a :class:`Rad4XCNNError` whose message is one line naming the case (where there is
one) and the problem; the command line prints that line instead of a traceback.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


class Rad4XCNNError(Exception):
    """A user-facing error: the message is a single line that says what is wrong and, if known, where."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class UsageError(Rad4XCNNError):
    """A problem with how Rad4XCNN was asked to run (a setting, a flag, a configuration key), not with the
    data: the command line exits with 2 for it, as for argparse's own usage errors."""


class CaseError(Rad4XCNNError):
    """A problem with one case of a cohort; the message starts with ``case <id>:``."""

    def __init__(self, case_id: str | None, problem: str):
        self.case_id = None if case_id is None else str(case_id)
        self.problem = " ".join(str(problem).split())
        prefix = f"case {self.case_id}: " if self.case_id is not None else ""
        super().__init__(prefix + self.problem)


@dataclass(frozen=True)
class CaseFailure:
    """A per-case failure kept in ``run.json`` and in failure tables; the run goes on without the case."""

    case_id: str
    stage: str
    problem: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"case {self.case_id}: {self.problem} [{self.stage}]"


def first_line(exc: BaseException, limit: int = 300, prefer: str | None = None) -> str:
    """The first non-empty line of an exception's message (its type's name when it has none), cut to
    ``limit`` characters; with ``prefer``, the first line that contains it, if any (some libraries put the
    reason on a later line).

    Examples
    --------
    >>> first_line(ValueError("bad value\\n  more detail"))
    'bad value'
    >>> first_line(KeyError())
    'KeyError'
    """
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    chosen = next((line for line in lines if prefer and prefer in line), lines[0] if lines else "")
    return (chosen or type(exc).__name__)[:limit]


def describe_exception(exc: BaseException) -> str:
    """One line for people: a :class:`Rad4XCNNError`'s own message, else ``Type: first line``.

    Examples
    --------
    >>> describe_exception(Rad4XCNNError("case a: empty mask")), describe_exception(ZeroDivisionError("x"))
    ('case a: empty mask', 'ZeroDivisionError: x')
    """
    text = " ".join(str(exc).split())
    return text if isinstance(exc, Rad4XCNNError) else f"{type(exc).__name__}: {first_line(exc)}"
