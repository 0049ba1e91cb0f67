"""How a postback's status moves a conversion (SPEC §4), as a pure table.

The matcher does not know a conversion's current status when it plans: only the atomic
Lua step reads it. So for the postback's status the matcher sends the effect for *every*
possible current status ("" = no conversion yet, pending, approved, rejected), and the
script applies the one that matches. The money rules live here, in one readable table:

* no conversion yet → create it with the postback's status (approved credits);
* pending → approved credits, pending → rejected has nothing to credit;
* approved → rejected is a reversal: debit exactly what this conversion credited;
* the same status again is a duplicate: no effect, not forwarded;
* any other move (rejected → approved, approved → pending, rejected → pending) is kept
  in the history only: status and balance unchanged, not forwarded. A conversion can
  therefore never be credited twice.

    >>> decide("pending", "approved").points
    'credit'
    >>> decide("rejected", "approved").reason
    'status move rejected→approved kept in history only'
"""

from __future__ import annotations

from dataclasses import dataclass

#: Statuses that create or move conversions (``test`` never touches one).
CONVERSION_STATUSES = ("pending", "approved", "rejected")
#: A conversion's possible current statuses, in the order effects are sent to Lua.
CURRENT_STATUSES = ("", "pending", "approved", "rejected")

CREDIT = "credit"
DEBIT = "debit"
#: The action bits of an effect spec, as ``match.lua`` reads them.
FLAG_BITS = {
    "create": 1,
    "set_status": 2,
    "keep_history": 4,
    "credit": 8,
    "debit": 16,
    "forward": 32,
}


@dataclass(frozen=True)
class Effect:
    """What a postback does to a conversion in one current status.

    ``history`` names the step in the conversion's history (empty when nothing is
    recorded); ``reason`` goes to the received log.
    """

    outcome: str  # matched | duplicate | unmatched
    create: bool = False
    set_status: bool = False
    keep_history: bool = False
    points: str = ""  # "" | credit | debit
    forward: bool = False
    history: str = ""
    reason: str = ""

    def spec(self) -> str:
        """The compact form ``match.lua`` reads: ``<flags>outcome|history|reason``.

        ``<flags>`` is one character, 64 plus the sum of the action bits (see
        ``FLAG_BITS``), so the script tests its actions without parsing text.
        """
        bits = sum(
            bit
            for bit, on in (
                (FLAG_BITS["create"], self.create),
                (FLAG_BITS["set_status"], self.set_status),
                (FLAG_BITS["keep_history"], self.keep_history),
                (FLAG_BITS["credit"], self.points == CREDIT),
                (FLAG_BITS["debit"], self.points == DEBIT),
                (FLAG_BITS["forward"], self.forward),
            )
            if on
        )
        return f"{chr(64 + bits)}{self.outcome}|{self.history}|{self.reason}"


def decide(current: str, incoming: str) -> Effect:
    """The effect of a postback with status ``incoming`` on a conversion now ``current``."""
    if incoming not in CONVERSION_STATUSES:
        raise ValueError(f"status: {incoming!r} does not move a conversion")
    if current not in CURRENT_STATUSES:
        raise ValueError(f"current status {current!r} is unknown")
    if current == "":
        return Effect(
            "matched",
            create=True,
            points=CREDIT if incoming == "approved" else "",
            forward=True,
            history="created",
        )
    if current == incoming:
        return Effect("duplicate")
    if current == "pending" and incoming == "approved":
        return Effect("matched", set_status=True, points=CREDIT, forward=True, history="credited")
    if current == "pending" and incoming == "rejected":
        return Effect("matched", set_status=True, forward=True, history="rejected")
    if current == "approved" and incoming == "rejected":
        return Effect("matched", set_status=True, points=DEBIT, forward=True, history="reversed")
    return Effect(
        "matched",
        keep_history=True,
        history="kept",
        reason=f"status move {current}→{incoming} kept in history only",
    )


def refuse_new(reason: str) -> Effect:
    """For a postback that may move an existing conversion but must not create one."""
    return Effect("unmatched", reason=reason)


def effects(incoming: str, *, new: Effect | None = None) -> tuple[Effect, ...]:
    """The effect for each of ``CURRENT_STATUSES``; ``new`` overrides the "" case."""
    table = tuple(decide(current, incoming) for current in CURRENT_STATUSES)
    return table if new is None else (new, *table[1:])


#: The Lua specs per incoming status, computed once (the matcher's hot path reuses them).
SPECS = {status: tuple(e.spec() for e in effects(status)) for status in CONVERSION_STATUSES}
