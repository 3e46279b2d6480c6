"""Time in a query: "last week", "in March", "3 days ago", "before the trip", read as a span of days.

`parse` reads the first time expression of a query, relative to when it is asked (`as_of`), into a
`TimeRef`: a span of days `[start, end)` (either end open), or an anchor (`before`/`after` an event
named in words, "before the trip"), whose date search finds among the memories themselves
(`pipelines/memories/recency.py`). Spans are generous on purpose ("last week" is the last two
weeks): they boost or filter, and a memory just outside a strict reading should not be lost.
English only; a query with no time expression gets None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

MONTHS = {name: i + 1 for i, name in enumerate(
    "january february march april may june july august september october november december".split())}
FULL = frozenset(MONTHS)
MONTHS |= {name[:3]: n for name, n in list(MONTHS.items())} | {"sept": 9}
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
           "eight": 8, "nine": 9, "ten": 10, "couple of": 2, "few": 3, "several": 3}
UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}

_NUMBER = r"(\d{1,3}|a|an|one|two|three|four|five|six|seven|eight|nine|ten|couple of|few|several)"
_UNIT = r"(day|week|month|year)s?"
_MONTH = r"(january|february|march|april|may|june|july|august|september|october|november|december|" \
         r"jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)"
_RELATION = r"(before|after|since|until|by|prior to)"

_AGO = re.compile(rf"\b{_NUMBER} {_UNIT} ago\b")
_LAST_N = re.compile(rf"\b(?:last|past|previous) {_NUMBER} {_UNIT}\b")
_LAST = re.compile(r"\b(last|past|previous|this) (week|month|year|weekend)\b")
_DAY_WORD = re.compile(r"\b(yesterday|today|tonight|this morning|earlier today)\b")
_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
# "in March", "March 3rd", "on 3 March 2024", "March 2024", "December"; "may", "march" and the short forms
# are words too, so alone they need a preposition before them or a day or year after them.
_MONTH_DATE = re.compile(rf"\b(?:(in|during|since|before|after|until|by|of|on|early|late|mid)[- ]+)?"
                         rf"(?:(\d{{1,2}})(?:st|nd|rd|th)? (?:of )?)?{_MONTH}\b"
                         rf"(?:[ -](\d{{1,2}})(?:st|nd|rd|th)?\b)?(?:,? (\d{{4}})\b)?")
_YEAR = re.compile(r"\b(in|during|since|before|after|until|by) (\d{4})\b")
_BEFORE = re.compile(rf"\b{_RELATION}\s+$")
_UPCOMING = re.compile(r"\b(next|coming|upcoming)\s+$")
_ANCHOR = re.compile(rf"\b{_RELATION} ((?:my|the|our|his|her|their|i|we) [a-z0-9' -]{{2,60}}?)"
                     r"(?=[?.!,;]|$| and | or | when | did | do | was | were | is | have | had )")


@dataclass(frozen=True)
class TimeRef:
    """Days `[start, end)` the query is about (None: open), or an event it is `relation` to, in words."""

    start: date | None = None
    end: date | None = None
    relation: str | None = None  # "before" | "after", with `event`
    event: str | None = None

    def around(self, day: date) -> TimeRef:
        """The span this anchored reference means, once its event is known to be on `day`."""
        if self.relation == "before":
            return TimeRef(None, day)
        return TimeRef(day + timedelta(days=1) if self.relation == "after" else day, None)


def _number(word: str) -> int:
    return int(word) if word.isdigit() else NUMBERS[word]


def _relative(span: TimeRef, relation: str | None) -> TimeRef:
    """`before X` is everything before X's span; `after`/`since X` everything from it on."""
    if relation in ("before", "until", "by", "prior to"):
        return TimeRef(None, span.end if relation in ("until", "by") else span.start)
    if relation in ("after", "since"):
        return TimeRef(span.end if relation == "after" else span.start, None)
    return span


def _month_span(month: int, day: int | None, year: int | None, today: date) -> TimeRef:
    if year is None:  # the latest such month not after today
        year = today.year if (month, day or 1) <= (today.month, today.day) else today.year - 1
    if day is not None:
        try:
            start = date(year, month, day)
        except ValueError:
            return TimeRef()
        return TimeRef(start, start + timedelta(days=1))
    end = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return TimeRef(date(year, month, 1), end)


def parse(query: str, today: date) -> TimeRef | None:
    """The query's time, relative to `today` (when it is asked), or None; also None where the calendar
    ends (a span past year 9999 or before year 1, from an extreme `as_of`)."""
    try:
        return _parse(query, today)
    except (OverflowError, ValueError):
        return None


def _parse(query: str, today: date) -> TimeRef | None:
    q = " ".join(query.lower().split())
    if m := _AGO.search(q):
        unit = UNIT_DAYS[m.group(2)]
        center = today - timedelta(days=_number(m.group(1)) * unit)
        half = max(1, unit // 2) if unit > 1 else 1
        return TimeRef(center - timedelta(days=half), center + timedelta(days=half + 1))
    if m := _LAST_N.search(q):
        return TimeRef(today - timedelta(days=_number(m.group(1)) * UNIT_DAYS[m.group(2)]), today + timedelta(days=1))
    if m := _LAST.search(q):
        which, unit = m.groups()
        days = {"week": 7, "weekend": 7, "month": 31, "year": 366}[unit]
        # "this week" is the last 7 days; "last week" reaches back two, as people use it loosely.
        return TimeRef(today - timedelta(days=days * (1 if which == "this" else 2)), today + timedelta(days=1))
    if m := _DAY_WORD.search(q):
        day = today - timedelta(days=1) if m.group(1) == "yesterday" else today
        return TimeRef(day, day + timedelta(days=1))
    if m := _ISO.search(q):
        try:
            day = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            return None
        return _relative(TimeRef(day, day + timedelta(days=1)), _relation_before(q, m.start()))
    for m in _MONTH_DATE.finditer(q):
        prefix, day_before, name, day_after, year = m.groups()
        if not (prefix or day_before or day_after or year) and (name in ("may", "march") or name not in FULL):
            continue  # "may", "march" and abbreviations alone are words too
        if not (prefix or year) and _UPCOMING.search(q[:m.start()]):
            # "next November" is a plan, and a plan is dated by when it was told, not by when it is for: read
            # as the latest November it would boost (or filter to) the wrong month.
            continue
        day = day_before or day_after
        span = _month_span(MONTHS[name], int(day) if day else None, int(year) if year else None, today)
        if span.start is None:
            continue
        relation = prefix if prefix in ("before", "after", "since", "until", "by") else None
        return _relative(span, relation)
    if m := _YEAR.search(q):
        year = int(m.group(2))
        return _relative(TimeRef(date(year, 1, 1), date(year + 1, 1, 1)), m.group(1))
    if m := _ANCHOR.search(q):
        relation = "before" if m.group(1) in ("before", "until", "by", "prior to") else "after"
        return TimeRef(relation=relation, event=m.group(2).strip())
    return None


def _relation_before(q: str, position: int) -> str | None:
    m = _BEFORE.search(q[:position])
    return m.group(1) if m else None
