"""The tenant web console: static files shipped in the package (``serve_app/static``),
served by the router at ``/console``, and the security headers of every response.

The page loads only its own script and stylesheet (no inline script or style, nothing
from elsewhere), talks only to this origin, and may not be framed.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONSOLE_FILES = {
    "/console": "index.html",
    "/console/": "index.html",
    "/console/console.js": "console.js",
    "/console/console.css": "console.css",
}
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"
_COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@cache
def asset(path: str) -> tuple[bytes, str] | None:
    """(body, media type) of a console file, or None if ``path`` is not one."""
    name = CONSOLE_FILES.get(path)
    if name is None:
        return None
    return (STATIC_DIR / name).read_bytes(), MEDIA_TYPES[Path(name).suffix]


_CONSOLE_HEADERS = {**_COMMON, "Content-Security-Policy": CONSOLE_CSP, "Cache-Control": "no-cache"}
_API_HEADERS = {**_COMMON, "Content-Security-Policy": API_CSP}


def security_headers(console: bool) -> dict[str, str]:
    """Headers for every router response; the console's pages get the full CSP. Built
    once: this runs on every response."""
    return _CONSOLE_HEADERS if console else _API_HEADERS
