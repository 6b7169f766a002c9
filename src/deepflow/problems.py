"""Client errors as strict JSON: the 422 answer every served route shares, whatever its kind.

FastAPI's own 422 echoes the rejected input; when that input is a non-finite number (``NaN``,
``1e400``) or a string that is not valid Unicode (a lone surrogate, sent escaped or as raw
bytes), encoding the answer fails and the client gets a 500 for its own bad input. Here the
echo is made safe first: such a number becomes its text, such a string its escaped form.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def json_safe(value: Any) -> Any:
    """``value`` (already JSON-able) as strict JSON: non-finite floats and lone surrogates as text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


async def unprocessable(_: Any, exc: RequestValidationError) -> JSONResponse:
    """The handler of RequestValidationError: FastAPI's 422 body, made :func:`json_safe`."""
    return JSONResponse(status_code=422, content={"detail": json_safe(jsonable_encoder(exc.errors()))})
