"""Telling users about their bad input safely: values quoted in messages, and client errors as strict JSON.

Any message that quotes a user's value (a cell, a label, a column name, a line of a file) or
lists them shows it through :func:`quote`, :func:`clip` or :func:`listing`: a 5 MB cell is then
its first characters and a count, and 3,000 columns are the first ten and "(+2,990 more)", so
one bad value cannot make a 5 MB error line.

The 422 answer every served route shares, whatever its kind: FastAPI's own 422 echoes the
rejected input; when that input is a non-finite number (``NaN``, ``1e400``) or a string that is
not valid Unicode (a lone surrogate, sent escaped or as raw bytes), encoding the answer fails and
the client gets a 500 for its own bad input. Here the echo is made safe first: such a number
becomes its text, such a string its escaped form; and bounded: long strings, lists and nesting
are cut and at most ``MAX_ERRORS`` errors are listed, so a 5 MB text gets a short 422, and input
nested 900 levels deep cannot exhaust the stack. :func:`http_error` does the same for every
other error reply (404, 409, 413, 503). (FastAPI is imported only there: the readers
and prepare stages use the quoting helpers without it.)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

QUOTED_CHARS = 60  # characters of one value shown in a message
LISTED = 10  # values (or column names) shown in a message's list


def clip(text: object, chars: int = QUOTED_CHARS) -> str:
    """``text`` (any value, as ``str``) cut to its first ``chars`` characters, with how many were left out:
    ``'xxxx... (+4,999,940 characters)'``."""
    text = str(text)
    return text if len(text) <= chars else f"{text[:chars]}... (+{len(text) - chars:,} characters)"


def quote(value: object, chars: int = QUOTED_CHARS) -> str:
    """``value`` quoted (``repr`` of its text) for a message, cut as :func:`clip` cuts (the count
    outside the quotes): ``'churn'``, ``'yyyy...' (+4,999,940 characters)``."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= chars:
        return repr(text)
    return f"{text[:chars]!r}... (+{len(text) - chars:,} characters)"


def listing(values: Iterable[object], count: int = LISTED, chars: int = QUOTED_CHARS, quoted: bool = False) -> str:
    """The first ``count`` of ``values``, each cut to ``chars`` (:func:`quote`-d when ``quoted``),
    joined by commas, and how many more there are: ``a, b, c (+2,990 more)``."""
    values = list(values)
    shown = ", ".join(quote(v, chars) if quoted else clip(v, chars) for v in values[:count])
    return shown + (f" (+{len(values) - count:,} more)" if len(values) > count else "")


ECHO_CHARS = 200  # characters of one string echoed in an error reply (a rejected input, a key)
ECHO_ITEMS = 20  # items of a list, or keys of an object, echoed
ECHO_DEPTH = 6  # levels of nesting echoed; deeper input is shown as "..."
MESSAGE_CHARS = 2000  # characters of an error's message (``msg``, an HTTP error's ``detail``)
MAX_ERRORS = 50  # errors listed in one 422; the others are counted in a last entry


def json_safe(value: Any, chars: int = ECHO_CHARS, depth: int = ECHO_DEPTH) -> Any:
    """``value`` (an echoed input, an error's context) as strict, bounded JSON: non-finite floats as
    their text; strings with lone surrogates and bytes in escaped form; strings cut to ``chars``
    (:func:`clip`), lists and objects to their first ``ECHO_ITEMS``, nesting to ``depth`` levels;
    anything else as its text. Never recurses deeper than ``depth``, whatever the input."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else clip(value, chars)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray):
        shown = bytes(value[:chars]).decode("utf-8", "backslashreplace")
        return shown if len(value) <= chars else f"{shown}... (+{len(value) - chars:,} bytes)"
    if isinstance(value, dict | list | tuple | set | frozenset) and depth <= 0:
        return "..."
    if isinstance(value, dict):
        out = {str(json_safe(k, chars, 0)): json_safe(v, chars, depth - 1)
               for k, v in itertools.islice(value.items(), ECHO_ITEMS)}
        if len(value) > ECHO_ITEMS:
            out["..."] = f"+{len(value) - ECHO_ITEMS:,} more keys"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = [json_safe(v, chars, depth - 1) for v in itertools.islice(value, ECHO_ITEMS)]
        return items + ([f"... {len(value) - ECHO_ITEMS:,} more items"] if len(value) > ECHO_ITEMS else [])
    return clip(value, chars).encode("utf-8", "backslashreplace").decode("utf-8")


def error_entry(error: dict[str, Any]) -> dict[str, Any]:
    """One validation error (``type``, ``loc``, ``msg``, ``input``, ``ctx``) made :func:`json_safe`."""
    return {key: json_safe(value, MESSAGE_CHARS if key == "msg" else ECHO_CHARS) for key, value in error.items()}


async def unprocessable(_: Any, exc: RequestValidationError) -> JSONResponse:
    """The handler of RequestValidationError: FastAPI's 422 body, each error :func:`error_entry`, at
    most ``MAX_ERRORS`` of them (a last entry counts the others)."""
    from fastapi.responses import JSONResponse

    errors = list(exc.errors())
    detail = [error_entry(e) for e in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        detail.append({"type": "too_many_errors", "loc": ["body"], "input": None,
                       "msg": f"{len(errors) - MAX_ERRORS:,} more errors not listed ({len(errors):,} in all)"})
    return JSONResponse(status_code=422, content={"detail": detail})


async def http_error(_: Any, exc: StarletteHTTPException) -> Response:
    """The handler of HTTPException (404, 409, 413, 503, ...): its ``detail`` made :func:`json_safe`
    (a message quoting a path or a value can hold anything), its headers kept."""
    from fastapi.responses import JSONResponse, Response
    from fastapi.utils import is_body_allowed_for_status_code

    if not is_body_allowed_for_status_code(exc.status_code):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return JSONResponse(status_code=exc.status_code, content={"detail": json_safe(exc.detail, MESSAGE_CHARS)},
                        headers=exc.headers)
