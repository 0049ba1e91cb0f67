"""``postback admin``: sources, offers, partners, clicks, users, conversions, dead letters.

Every subcommand takes ``--json`` and then prints one JSON object (lists: one object with
the records under the plural name). Amounts are strings with two decimals. Validation is
``core``'s (``core.sources``, ``offers``, ``partners``…), so a bad field fails with one
line naming it, as on the admin API.

    postback admin source add --name "Survey wall"          # prints the new key
    postback admin offer add VBFS6 --revshare 80 --url 'https://offer.example/?c={click_id}'
    postback admin click add --offer VBFS6 --partner pub1 --user u1   # prints the click_id
    postback admin user show u1 --json                      # {"user_id": "u1", "points": "4.00"}
"""

from __future__ import annotations

import argparse
import sys

import orjson

from core.clicks import SUB_IDS
from core.config import Settings
from core.dialects import merge_pairs, parse_pairs
from core.offers import Offer
from core.partners import Partner
from core.sources import Source
from core.validation import ValidationError
from storage.dns import resolve_host
from storage.keys import Keys
from storage.redis_client import connect
from storage.repositories import Store

KINDS = ("source", "offer", "partner")


def configure(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object")
    groups = parser.add_subparsers(dest="entity", required=True)

    source = _actions(groups, "source", "upstream sources (postback keys)")
    add = source.add_parser("add", parents=[common], help="create a source; prints its key")
    add.add_argument("--name", required=True)
    add.add_argument("--key", help="use this key (≥ 16 URL-safe chars) instead of a random one")
    add.add_argument(
        "--allow-ip",
        action="append",
        default=[],
        metavar="CIDR",
        help="caller addresses allowed (repeat); none = any",
    )
    _dialect_options(add, "source")
    change = source.add_parser("set", parents=[common], help="change a source; at once")
    change.add_argument("key", metavar="KEY")
    change.add_argument("--name")
    change.add_argument(
        "--allow-ip",
        action="append",
        default=None,
        metavar="CIDR",
        help="caller addresses allowed (repeat; replaces the list); 'any' = any",
    )
    _dialect_options(change, "source", changing=True)

    offer = _actions(groups, "offer", "offers and their payout model")
    add = offer.add_parser("add", parents=[common], help="create an offer")
    add.add_argument("offer_id")
    model = add.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--revshare", metavar="PCT", help="partner gets PCT %% of the upstream payout"
    )
    model.add_argument(
        "--fixed", metavar="AMOUNT", help="partner gets AMOUNT whatever the upstream payout"
    )
    add.add_argument("--currency", default="USD")
    add.add_argument("--url", default="", help="landing URL; {click_id} is filled in")
    add.add_argument("--window-days", default="30", help="attribution window (default 30)")
    add.add_argument("--name", default="")
    add.add_argument(
        "--hold", default="", metavar="DURATION", help="hold points for 7d, 12h, 30m, 45s..."
    )
    goal = offer.add_parser("goal", parents=[common], help="a goal's own payout model")
    goal.add_argument("offer_id")
    goal.add_argument("goal")
    model = goal.add_mutually_exclusive_group(required=True)
    model.add_argument("--revshare", metavar="PCT", help="PCT %% of the upstream payout")
    model.add_argument("--fixed", metavar="AMOUNT", help="AMOUNT whatever the upstream payout")

    partner = _actions(groups, "partner", "downstream partners (publishers)")
    add = partner.add_parser("add", parents=[common], help="create a partner")
    add.add_argument("partner_id")
    add.add_argument(
        "--url", required=True, help="postback URL; may hold macros such as {click_id}"
    )
    add.add_argument("--method", default="GET", type=str.upper, choices=("GET", "POST"))
    add.add_argument("--scope", default="own", choices=("own", "all"))
    add.add_argument("--secret", default="", help="signs deliveries (X-Postback-Signature)")
    add.add_argument("--name", default="")
    add.add_argument("--email", default="")
    add.add_argument(
        "--allow-private", action="store_true", help="permit a loopback or private-network URL"
    )
    _dialect_options(add, "partner")

    for name, sub in (("source", source), ("offer", offer), ("partner", partner)):
        sub.add_parser("list", parents=[common], help=f"list {name}s")
        for action in ("deactivate", "activate"):
            one = sub.add_parser(action, parents=[common], help=f"{action} a {name} at once")
            one.add_argument("record_id", metavar="KEY" if name == "source" else "ID")

    click = _actions(groups, "click", "record clicks by hand")
    add = click.add_parser("add", parents=[common], help="record a click; prints its click_id")
    add.add_argument("--offer", required=True)
    add.add_argument("--partner", required=True)
    add.add_argument("--user", required=True)
    add.add_argument("--click-id")
    add.add_argument("--ip", default="")
    for sub_id in SUB_IDS:
        add.add_argument(f"--{sub_id}", default="")

    user = _actions(groups, "user", "user balances")
    user.add_parser("show", parents=[common], help="print a user's points").add_argument("user_id")

    conversion = _actions(groups, "conversion", "conversions")
    conversion.add_parser("show", parents=[common], help="print a conversion").add_argument(
        "conversion_id"
    )

    dead = _actions(groups, "deadletters", "dead-lettered postbacks and deliveries")
    listing = dead.add_parser("list", parents=[common], help="list dead letters")
    listing.add_argument("--partner")
    listing.add_argument("--limit", type=int, default=100)
    replay = dead.add_parser("replay", parents=[common], help="queue dead letters again")
    replay.add_argument("--partner", help="only this partner's deliveries")
    replay.add_argument("--all", action="store_true", help="every dead letter")


def _actions(groups, entity: str, summary: str):
    """The subcommands (``add``, ``list``...) of one entity."""
    return groups.add_parser(entity, help=summary).add_subparsers(dest="action", required=True)


def _dialect_options(parser: argparse.ArgumentParser, kind: str, *, changing: bool = False) -> None:
    """``--param`` and ``--status-map`` of sources and partners (SPEC §8)."""
    if kind == "source":
        param_help = "read parameter NAME as FIELD, e.g. click_id=aff_sub (repeat)"
        status_help, status_var = "read status VALUE as STATUS, e.g. 1=approved", "VALUE=STATUS"
    else:
        param_help = "send FIELD as parameter NAME, e.g. click_id=subid (repeat)"
        status_help, status_var = "send STATUS as VALUE, e.g. approved=1", "STATUS=VALUE"
    if changing:
        param_help += "; FIELD= removes it"
        status_help += f"; {status_var.split('=')[0]}= removes it"
    parser.add_argument(
        "--param", action="append", default=[], metavar="FIELD=NAME", help=param_help
    )
    parser.add_argument(
        "--status-map", action="append", default=[], metavar=status_var, help=status_help
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    client = connect(settings)
    store = Store(client, Keys(settings.namespace, settings.partitions))
    handler = _HANDLERS.get((args.entity, args.action)) or _record_action
    result, text = handler(store, args)
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")
    return 0


def _source_add(store: Store, args) -> tuple[dict, str]:
    options = _options(args, "name", "key", "allow_ip")
    source = store.add_source(Source.build(**options, **_dialect_of(args)))
    return source.public(), source.key


def _options(args, *names: str) -> dict:
    """The named options as keyword arguments (each option is named as the field it fills)."""
    return {name: getattr(args, name) for name in names}


def _dialect_of(args) -> dict:
    """``params`` and ``status_map`` from ``--param`` and ``--status-map``."""
    return {
        "params": parse_pairs("param", args.param),
        "status_map": parse_pairs("status_map", args.status_map),
    }


def _source_set(store: Store, args) -> tuple[dict, str]:
    """Change a source. ``--param``/``--status-map`` change the entries they name (an empty
    right side removes one) and keep the others; ``--allow-ip`` replaces the list."""
    current = store.get_source(args.key)
    params = merge_pairs(current.params, parse_pairs("param", args.param, removing=True))
    status_map = merge_pairs(
        current.status_map, parse_pairs("status_map", args.status_map, removing=True)
    )
    allow = current.allow
    if args.allow_ip is not None:
        allow = [] if args.allow_ip == ["any"] else args.allow_ip
    checked = Source.build(
        name=current.name if args.name is None else args.name,
        key=current.key,
        allow_ip=allow,
        params=params,
        status_map=status_map,
    )
    source = store.update_source(
        args.key,
        name=checked.name,
        allow=checked.allow,
        params=checked.params,
        status_map=checked.status_map,
    )
    return source.public(), f"source {source.key} changed"


def _offer_add(store: Store, args) -> tuple[dict, str]:
    options = _options(args, "revshare", "fixed", "currency", "url", "window_days", "name", "hold")
    offer = store.add_offer(Offer.build(args.offer_id, **options))
    return offer.public(), f"offer {offer.offer_id} created"


def _offer_goal(store: Store, args) -> tuple[dict, str]:
    offer = store.get_offer(args.offer_id)
    offer.with_goal(args.goal, revshare=args.revshare, fixed=args.fixed)
    store.update_offer(offer.offer_id, offer)
    name = args.goal.strip().lower()
    model = offer.goals[name]
    shown = f"{model['revshare']} %" if "revshare" in model else f"fixed {model['fixed']}"
    return offer.public(), f"offer {offer.offer_id} goal {name}: {shown}"


def _partner_add(store: Store, args) -> tuple[dict, str]:
    options = _options(args, "url", "method", "scope", "secret", "name", "email", "allow_private")
    partner = store.add_partner(
        Partner.build(args.partner_id, **options, **_dialect_of(args), resolve=resolve_host)
    )
    return partner.public(), f"partner {partner.partner_id} created"


def _click_add(store: Store, args) -> tuple[dict, str]:
    click = store.add_click(
        offer_id=args.offer,
        partner_id=args.partner,
        user_id=args.user,
        ip=args.ip,
        click_id=args.click_id,
        subs={k: getattr(args, k) for k in SUB_IDS},
    )
    return click.public(), click.click_id


def _user_show(store: Store, args) -> tuple[dict, str]:
    """``4.00 points`` (and ``(held: 2.00)``). Points are their own unit, not money: one
    point per 1.00 of partner payout whatever the offer's currency (SPEC §2), so the line
    names the unit rather than a currency the points do not have."""
    user = store.user(args.user_id)
    if user["held"] != "0.00":
        return user, f"{user['points']} points (held: {user['held']})"
    return user, f"{user['points']} points"


def _conversion_show(store: Store, args) -> tuple[dict, str]:
    from storage.logs import shown_conversion

    conversion = shown_conversion(store, args.conversion_id)
    return conversion, _lines(conversion)


def _deadletters_list(store: Store, args) -> tuple[dict, str]:
    from storage.deadletters import list_dead_letters

    letters = list_dead_letters(store.r, store.keys, partner=args.partner, limit=args.limit)
    if not letters:
        return {"dead_letters": []}, "no dead letters"
    columns = ("id", "kind", "partner_id", "log_id", "error")
    return {"dead_letters": letters}, _table(letters, columns)


def _deadletters_replay(store: Store, args) -> tuple[dict, str]:
    from storage.deadletters import replay

    try:
        count = replay(store.r, store.keys, partner=args.partner, all=args.all)
    except ValueError as exc:
        raise ValidationError("replay", str(exc)) from None
    return {"replayed": count}, f"{count} dead letter(s) queued again"


_LIST_COLUMNS = {
    "source": ("key", "name", "active", "allow"),
    "offer": (
        "offer_id",
        "name",
        "payout_model",
        "revshare",
        "fixed",
        "currency",
        "window_days",
        "hold_s",
        "active",
    ),
    "partner": ("partner_id", "name", "method", "scope", "url", "active"),
}


def _record_action(store: Store, args) -> tuple[dict, str]:
    """list / activate / deactivate of sources, offers and partners."""
    kind = args.entity
    if args.action == "list":
        records = [r.public() for r in getattr(store, f"list_{kind}s")()]
        text = _table(records, _LIST_COLUMNS[kind]) if records else f"no {kind}s"
        return {f"{kind}s": records}, text
    active = args.action == "activate"
    store.set_active(kind, args.record_id, active)
    record = getattr(store, f"get_{kind}")(args.record_id).public()
    return record, f"{kind} {args.record_id} {args.action}d"


_HANDLERS = {
    ("source", "add"): _source_add,
    ("source", "set"): _source_set,
    ("offer", "goal"): _offer_goal,
    ("offer", "add"): _offer_add,
    ("partner", "add"): _partner_add,
    ("click", "add"): _click_add,
    ("user", "show"): _user_show,
    ("conversion", "show"): _conversion_show,
    ("deadletters", "list"): _deadletters_list,
    ("deadletters", "replay"): _deadletters_replay,
}


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return "-" if value in (None, "") else str(value)


def _table(rows: list[dict], columns: tuple[str, ...]) -> str:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _lines(record: dict) -> str:
    width = max(map(len, record))
    out = []
    for name, value in record.items():
        shown = orjson.dumps(value).decode() if isinstance(value, dict | list) else _cell(value)
        out.append(f"{name.ljust(width)}  {shown}")
    return "\n".join(out)
