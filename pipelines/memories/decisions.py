"""Turn the LLM's decisions about new facts into operations on memories, trusting nothing it says.

The LLM sees stored memories under small integer ids (0, 1, 2 …), never their real ids: short
numbers are what models copy back reliably (mem0's trick), and a real id can't leak into, or be
forged in, an answer. `plan` maps ids back and checks every decision:
- an id that was not shown (invented, or out of range) is rejected and recorded: no row it could
  name is touched; the ids shown are only memories of the job's own organization and scope;
- a fact index that doesn't exist is rejected, and so is a second change to a memory already
  changed by an earlier decision of the same answer;
- an UPDATE without text takes the fact's text; an UPDATE or ADD to text already stored is a NOOP.
A fact is never silently lost: a fact left with no valid decision (the model skipped it or every
decision about it was rejected) is ADDed as it is, and so is a fact whose only decision is a DELETE
(the DELETE + ADD of a contradiction).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from schemas.enums import MemoryEvent
from schemas.extraction import FactDecision


@dataclass(frozen=True)
class Shown:
    """A stored memory as the LLM saw it: `ref` is the small id it was shown under."""

    ref: int
    memory_id: uuid.UUID
    content: str


@dataclass
class Operation:
    """One change (or a NOOP) that a fact leads to."""

    event: MemoryEvent
    fact: int
    text: str | None = None                 # ADD and UPDATE: the memory's new text
    memory_id: uuid.UUID | None = None      # UPDATE, DELETE, NOOP: the stored memory concerned
    old_text: str | None = None             # UPDATE and DELETE: the text before
    source: str = "llm"                     # llm, exact_duplicate, near_duplicate, no_similar_memory, fallback
    similarity: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape in job results."""
        out: dict[str, Any] = {"fact": self.fact, "event": self.event.value, "source": self.source}
        if self.memory_id is not None:
            out["memory_id"] = str(self.memory_id)
        if self.text is not None:
            out["text"] = self.text
        if self.similarity is not None:
            out["similarity"] = round(self.similarity, 4)
        return out


@dataclass
class Rejection:
    """A decision that was ignored, and why."""

    decision: dict[str, Any]
    reason: str  # unknown_id, missing_id, unknown_fact, conflict
    message: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape in job results."""
        return {"decision": self.decision, "reason": self.reason, "message": self.message}


@dataclass
class Plan:
    """What the decisions amount to: operations to apply, decisions rejected."""

    operations: list[Operation] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def number_memories(memories: list[tuple[uuid.UUID, str]]) -> list[Shown]:
    """Give each distinct memory a small id (0, 1, …) in order of first appearance."""
    shown: dict[uuid.UUID, Shown] = {}
    for memory_id, content in memories:
        if memory_id not in shown:
            shown[memory_id] = Shown(len(shown), memory_id, content)
    return list(shown.values())


def _reject(plan: Plan, decision: FactDecision, reason: str, message: str) -> None:
    plan.rejected.append(Rejection(decision.model_dump(exclude_none=True), reason, message))


def plan(facts: list[str], shown: list[Shown], decisions: list[FactDecision]) -> Plan:
    """Validate the decisions about `facts` against the memories `shown`; see the module docstring."""
    by_ref = {s.ref: s for s in shown}
    result = Plan()
    changed: set[uuid.UUID] = set()
    kept: set[int] = set()  # facts whose content is now stored (ADD, UPDATE) or already was (NOOP)
    for decision in decisions:
        if not 0 <= decision.fact < len(facts):
            _reject(result, decision, "unknown_fact", f"there is no new fact {decision.fact}")
            continue
        fact_text = facts[decision.fact]
        event = MemoryEvent(decision.event)
        text = (decision.text or "").strip() or fact_text
        if event is MemoryEvent.ADD:
            result.operations.append(Operation(MemoryEvent.ADD, decision.fact, text=text))
            kept.add(decision.fact)
            continue
        if decision.id is None:
            if event is MemoryEvent.NOOP:
                result.operations.append(Operation(MemoryEvent.NOOP, decision.fact))
                kept.add(decision.fact)
            else:
                _reject(result, decision, "missing_id", f"{event.value} names no memory id")
            continue
        target = by_ref.get(decision.id)
        if target is None:
            _reject(result, decision, "unknown_id", f"memory id {decision.id} was not among the ids shown")
            continue
        if event is MemoryEvent.NOOP:
            result.operations.append(Operation(MemoryEvent.NOOP, decision.fact, memory_id=target.memory_id))
            kept.add(decision.fact)
            continue
        if target.memory_id in changed:
            _reject(result, decision, "conflict", f"memory id {decision.id} is already changed by an earlier decision")
            continue
        if event is MemoryEvent.UPDATE and text == target.content:
            result.operations.append(Operation(MemoryEvent.NOOP, decision.fact, memory_id=target.memory_id))
            kept.add(decision.fact)
            continue
        changed.add(target.memory_id)
        if event is MemoryEvent.UPDATE:
            result.operations.append(Operation(MemoryEvent.UPDATE, decision.fact, text=text,
                                               memory_id=target.memory_id, old_text=target.content))
            kept.add(decision.fact)
        else:
            result.operations.append(Operation(MemoryEvent.DELETE, decision.fact, memory_id=target.memory_id,
                                               old_text=target.content))
    for index, fact_text in enumerate(facts):
        if index not in kept:
            # Skipped, rejected, or only a DELETE: the fact itself is still true and stays remembered.
            result.operations.append(Operation(MemoryEvent.ADD, index, text=fact_text, source="fallback"))
    _drop_repeated_adds(result)
    return result


def _drop_repeated_adds(result: Plan) -> None:
    """A second ADD of the same text in one answer is a NOOP."""
    seen: set[str] = set()
    for op in result.operations:
        if op.event is MemoryEvent.ADD:
            if op.text in seen:
                op.event, op.text = MemoryEvent.NOOP, None
            else:
                seen.add(op.text)
