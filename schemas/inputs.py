"""What every request input must be before a model sees it, and the bounded types models share.

- Text PostgreSQL can store: no NUL (`\\u0000`) anywhere, in any string, key, parameter or form field.
- JSON with finite numbers only: `NaN`, `Infinity` and literals beyond a double's range (`1e400`) are
  refused instead of becoming values the database or the scorer chokes on.
- Integers that fit the column they land in (`Int32`).
- Metadata objects of bounded size, depth and key count (`Metadata`).
- Names people tell apart by eye (`display_name`): NFKC-normalized, no invisible or bidi-control
  characters, no word mixing look-alike scripts, compared by a look-alike skeleton (`name_key`).

No I/O: the API's route class (`api/routing.py`) applies the request-wide checks once per request.
"""

from __future__ import annotations

import json
import math
import unicodedata
from typing import Annotated, Any
from urllib.parse import urlparse

from pydantic import AfterValidator, Field

INT32_MAX = 2**31 - 1
# A bound for counts and sizes that land in INTEGER columns (versions, limits, char counts).
Int32 = Annotated[int, Field(le=INT32_MAX)]

METADATA_MAX_BYTES = 16_384
METADATA_MAX_DEPTH = 5
METADATA_MAX_KEYS = 256
METADATA_KEY_MAX_CHARS = 255
METADATA_HELP = (f"Any JSON object of at most {METADATA_MAX_KEYS} keys in all, nested at most {METADATA_MAX_DEPTH} "
                 f"levels, {METADATA_MAX_BYTES // 1024} KiB as JSON.")


class InputRejected(ValueError):
    """An input no model should see; `kind` is a stable machine-readable type, `loc` where it was."""

    def __init__(self, message: str, *, kind: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.message, self.kind, self.loc = message, kind, loc

    def detail(self) -> dict[str, Any]:
        """In the shape of a validation error's details entry."""
        return {"loc": list(self.loc), "msg": self.message, "type": self.kind}


def check_http_url(value: str | None) -> str | None:
    """An http:// or https:// URL with a host, as given (None passes): where the server may be told to connect."""
    if value is None:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


def _no_constants(name: str) -> Any:
    raise InputRejected(f"{name} is not a JSON number: send finite numbers only", kind="number_not_finite",
                        loc=("body",))


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputRejected(f"the number {text[:40]} is beyond the range of a double: send finite numbers only",
                            kind="number_not_finite", loc=("body",))
    return value


def find_nul(value: Any, loc: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where the first NUL character is in a decoded JSON value (a key or a string), or None."""
    if isinstance(value, str):
        return loc if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return (*loc, key.replace("\x00", "\\u0000"))
            found = find_nul(item, (*loc, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = find_nul(item, (*loc, index))
            if found is not None:
                return found
    return None


def nul_rejected(loc: tuple[str | int, ...]) -> InputRejected:
    """The one error for a NUL character, wherever it was."""
    return InputRejected("text may not contain NUL characters (\\u0000)", kind="string_contains_nul", loc=loc)


def strict_json_loads(raw: bytes | str) -> Any:
    """`json.loads` for request bodies: only finite numbers and text without NUL.

    Malformed JSON still raises `json.JSONDecodeError`; what is well-formed but unacceptable raises
    `InputRejected`.
    """
    try:
        value = json.loads(raw, parse_constant=_no_constants, parse_float=_finite_float)
    except RecursionError:
        raise InputRejected("the JSON is nested too deeply", kind="json_too_deep", loc=("body",)) from None
    # A NUL can only arrive as the escape `\u0000` (a raw one is malformed JSON): skip the walk without it.
    if (b"\\u0000" if isinstance(raw, bytes) else "\\u0000") in raw:
        found = find_nul(value, ("body",))
        if found is not None:
            raise nul_rejected(found)
    return value


def _check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    keys = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            if depth > METADATA_MAX_DEPTH:
                raise ValueError(f"metadata may nest objects and arrays at most {METADATA_MAX_DEPTH} levels deep")
            keys += len(item)
            for key in item:
                if len(key) > METADATA_KEY_MAX_CHARS:
                    raise ValueError(f"metadata keys are at most {METADATA_KEY_MAX_CHARS} characters")
            pending.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            if depth > METADATA_MAX_DEPTH:
                raise ValueError(f"metadata may nest objects and arrays at most {METADATA_MAX_DEPTH} levels deep")
            pending.extend((v, depth + 1) for v in item)
    if keys > METADATA_MAX_KEYS:
        raise ValueError(f"metadata may hold at most {METADATA_MAX_KEYS} keys in all ({keys} given)")
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > METADATA_MAX_BYTES:
        raise ValueError(f"metadata may be at most {METADATA_MAX_BYTES} bytes as JSON ({size} given)")
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_check_metadata), Field(description=METADATA_HELP)]

# Characters nobody sees, or that reorder what they see: refused in names.
_INVISIBLE = frozenset(map(chr, (0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0)))
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})
# Letters of other scripts that look like Latin ones (Unicode TR39's confusables, the part that
# matters for names: Cyrillic and Greek), mapped before case folding so both cases map right.
_LOOK_ALIKES = str.maketrans({
    **dict(zip("АВЕЅІЈКМНОРСТХУаеіјорсхуѕԁһӏԛԝүҽ", "ABESIJKMHOPCTXYaeijopcxysdhlqwye", strict=True)),
    **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧαικνορτυχ", "ABEZHIKMNOPTYXaikvoptux", strict=True)),
})
_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")


def _script(ch: str) -> str | None:
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    return next((s for s in _SCRIPTS if name.startswith(s)), "OTHER")


def _check_name(value: str, max_length: int) -> str:
    value = unicodedata.normalize("NFKC", value).strip()
    if len(value) > max_length:
        raise ValueError(f"a name is at most {max_length} characters")
    for ch in value:
        if ch in _INVISIBLE or unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise ValueError(f"names may not contain invisible, control or direction-changing characters "
                             f"(U+{ord(ch):04X} {unicodedata.name(ch, 'unassigned')})")
    for word in value.split():
        scripts = {s for s in map(_script, word) if s in _SCRIPTS}
        if len(scripts) > 1:
            raise ValueError(f"a word may not mix {' and '.join(sorted(s.title() for s in scripts))} letters "
                             f"({word!r}): they look alike")
    if not value:
        raise ValueError("a name needs at least one visible character")
    return value


def name_key(name: str) -> str:
    """What two names that look alike share: NFKC, look-alike letters as Latin, no accents, case-folded,
    spaces collapsed. Uniqueness of names is checked on this key."""
    text = unicodedata.normalize("NFKC", name).translate(_LOOK_ALIKES)
    text = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) not in ("Mn", "Me"))
    return " ".join(text.casefold().split())


def display_name(max_length: int) -> Any:
    """A name people tell apart by eye, 1 to `max_length` characters after normalization."""
    return Annotated[str, Field(min_length=1, max_length=max_length),
                     AfterValidator(lambda value: _check_name(value, max_length))]
