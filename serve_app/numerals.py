"""Numbers in what clients send: ASCII digits, and nothing else Python would accept.

``int()`` and ``float()`` take far more than a client should send: other scripts'
digits (``"٣"``), superscripts that pass ``str.isdigit`` and then fail ``int``
(``"²"``), underscores (``"1_000"``), surrounding whitespace, ``"inf"`` and ``"nan"``.
One grammar for every number in a query string or header keeps them unambiguous.
"""

from __future__ import annotations

import re

_INTEGER = re.compile(r"[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?", re.ASCII)


def is_integer(raw: str) -> bool:
    """``raw`` is one or more ASCII digits."""
    return _INTEGER.fullmatch(raw) is not None


def is_decimal(raw: str) -> bool:
    """``raw`` is an unsigned decimal of ASCII digits (``0.25``, ``.5``, ``1``, ``5e-1``)."""
    return _DECIMAL.fullmatch(raw) is not None
