"""What each stream entry and record holds. The one place the wire shapes are written down.

Amounts are integer cents in Redis and strings with two decimals ("4.00") in anything a
person or partner reads. Times are unix milliseconds unless a name says otherwise.

Input stream (``keys.input_stream(n)``, written by the edge, read by the matcher)::

    source   the source key
    method   GET | POST | BATCH
    ip       caller address
    params   JSON: the validated postback — click_id, status (lower case), payout ("5.00"),
             currency, transaction_id, offer_id, survey_id, goal, reason (each only when
             given) and custom (object, verbatim)

  The entry ID is the ``log_id`` answered to the caller.

Received log (``keys.received_log(n)``, written by the matcher's atomic step)::

    log_id, time, source, method, ip, params (JSON, as above),
    outcome      matched | unmatched | duplicate | test | dead-lettered
    reason       why (unmatched, dead-lettered, ignored status moves), else absent
    status       the postback's status
    conversion_id, click_id, offer_id, partner_id, user_id, matched_by (click_id | offer_fallback)
    warning      set when matched_by is offer_fallback (no click_id was sent)

Conversion hash (``keys.conversion(n, id)``)::

    conversion_id, source, click_id, offer_id, partner_id, user_id, transaction_id, goal,
    status, payout_cents (upstream), partner_payout_cents, credited_cents (points now
    credited by this conversion), held_cents (points held until hold_until, ms, on an
    offer with a hold; hold_released: when hold_due.lua credited them), currency,
    custom (JSON), matched_by, log_id (first),
    created, updated, history (JSON list of {status, at, log_id, payout_cents,
    partner_payout_cents, reason, effect}; payouts and reason only when the postback
    sent them), survey_id and warning (offer_fallback) when present

Held ledger and holds due (``keys.held(n)``, ``keys.holds_due(n)``)::

    held       hash, user_id -> cents held in this partition (beside ``keys.points(n)``)
    holds-due  sorted set, conversion_id scored by the ms its hold ends; match.lua adds
               (approval on a held offer) and removes (reversal during the hold),
               hold_due.lua removes and credits in one step

Forward job (``keys.forward_stream(n)`` field ``job``, and the retry set's members)::

    JSON {partner_id, payload, log_id, conversion_id, attempt (the attempt about to be
    made, from 1), created}

  ``payload`` is what the partner receives (SPEC §5): click_id, status, payout (the
  partner's), currency, offer_id, transaction_id, conversion_id, user_id, sub1..sub5,
  timestamp, custom fields; empty values left out; never the source key.

Forwarded log (``keys.forwarded_log(n)``), one entry per attempt::

    partner_id, partner_name, partner_email, url, method, success (1|0), status_code,
    response_body (≤ 500 chars), response_ms, attempt, error, log_id, conversion_id,
    payload (JSON), time, result (delivered | retry | failed | dead-lettered)

Dead letters (``keys.dead_letters(n)``)::

    kind (postback | delivery), error, time, partner_id (deliveries), log_id,
    data (JSON: the input entry's fields, or the job)

Stats hash (``keys.stats(n)``), counters for ``/metrics``::

    outcome:<outcome>                      matcher outcomes
    delivery:<partner_id>:<result>         delivery attempts by result
    latency_bucket:<le_ms>, latency_sum_ms, latency_count   delivery latency histogram
                                           (buckets cumulative like Prometheus ``le``:
                                           an attempt counts in every bucket >= its ms;
                                           +Inf is latency_count; only HTTP attempts)
"""

from __future__ import annotations

OUTCOMES = ("matched", "unmatched", "duplicate", "test", "dead-lettered")
DELIVERY_RESULTS = ("delivered", "retry", "failed", "dead-lettered")
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
