"""What ``tenantctl`` prints reaches an operator's terminal: no control characters in it.

Tenant names, model names, load errors and usage rows can carry text a tenant chose. A
string holding ``ESC [ ...`` could rewrite the operator's screen, hide a line or forge
one; a right-to-left override could reorder what they read. Everything ``tenantctl``
writes to stdout and stderr goes through ``escape``: C0 and C1 controls (but newline
and tab) and bidirectional overrides become visible ``\\xNN`` / ``\\uNNNN`` escapes.
JSON output is already ASCII with escapes; this changes nothing there.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from typing import Any, TextIO

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape(text: str) -> str:
    """``text`` with every control or bidi-override character written as an escape."""
    return _UNSAFE.sub(
        lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text
    )


class _Escaping:
    """A text stream that escapes what is written to it (see ``escape``)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(escape(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def escaped_output() -> Iterator[None]:
    """Escape everything written to ``sys.stdout`` and ``sys.stderr`` while it runs."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Escaping(out), _Escaping(err)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
