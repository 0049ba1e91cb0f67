"""The Python side of ``match.lua``'s protocol: one entry's arguments, by name.

A ``match.lua`` call carries, per entry, a :class:`Segment` (its fields in this order)
followed by the entry's recipients. The script reads the fields through named offsets
(``local F_LOG_ID = 0`` ... in its header, one per field, in the same order) and the
effect flags through ``local FLAG_CREATE = 1`` ...; ``tests/test_match_segment.py``
holds both to this module, so a field added, dropped or moved on one side only fails a
test instead of shifting every argument after it.

    >>> segment = Segment(log_id="1-0", time=1, status="approved", ...)
    >>> args = [*segment, *recipients]      # segment.recipients == len(recipients)
"""

from __future__ import annotations

from typing import NamedTuple

from core.transitions import FLAG_BITS

#: Effect flags as match.lua reads them (``local FLAG_<NAME> = <bit>``): the first
#: character of an effect spec is ``chr(64 + sum of its bits)`` (core.transitions).
EFFECT_FLAGS = FLAG_BITS


class Segment(NamedTuple):
    """One entry's fixed ``match.lua`` arguments; "" means absent (but for source ..
    matched_by of a conversion). Amounts are integer cents, times ms."""

    #: The input entry id (also the received log's log_id).
    log_id: str
    #: The postback's time, ms.
    time: int
    status: str
    user_id: str
    #: "" for a plain entry (unmatched, test): no conversion read or written.
    conversion_id: str
    currency: str
    #: Partner payout cents from the postback: what a creation credits.
    partner_cents: int
    #: Upstream payout cents, or "" when the postback gave none (a move then credits
    #: the stored partner payout and keeps the stored payouts).
    upstream_cents: int | str
    #: The history entry's JSON without its closing brace (the script adds the effect).
    history_step: bytes | str
    #: The effect spec ("<flags>outcome|history step|reason") for each current status
    #: of the conversion (core.transitions.CURRENT_STATUSES); a plain entry has only
    #: effect_new.
    effect_new: str
    effect_pending: str
    effect_approved: str
    effect_rejected: str
    #: The forward jobs' payload JSON; its "payout" is ``partner_cents`` (the script
    #: rewrites it when the conversion reports another payout).
    payload: bytes | str
    #: How many recipients (partner_id JSON strings) follow the segment.
    recipients: int
    source: str
    click_id: str
    offer_id: str
    partner_id: str
    matched_by: str
    warning: str
    method: str
    ip: str
    params: str
    transaction_id: str
    goal: str
    survey_id: str
    custom: bytes | str
    #: Hold ms of the offer: 0 = none (a credit goes to the points), else a credit goes
    #: to the held hash until ``time + hold_ms`` (hold_due.lua credits it then).
    hold_ms: int


#: Fixed arguments per entry, before its recipients (match.lua's ``SEG``).
SEGMENT_LENGTH = len(Segment._fields)
#: The effect fields, in the order of core.transitions.CURRENT_STATUSES.
EFFECT_FIELDS = ("effect_new", "effect_pending", "effect_approved", "effect_rejected")
