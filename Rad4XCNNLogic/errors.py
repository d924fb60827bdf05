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
