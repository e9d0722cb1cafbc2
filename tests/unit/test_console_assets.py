"""The console's static files: no inline script or style, no HTML from strings, and the
headers that keep the page to itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from serve_app.http.console import CONSOLE_FILES, STATIC_DIR, asset, security_headers


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text += data.strip()


def test_every_console_path_serves_a_shipped_file():
    for path, name in CONSOLE_FILES.items():
        found = asset(path)
        assert found is not None and found[0] == (STATIC_DIR / name).read_bytes()
    assert asset("/console/../router.py") is None


def test_the_page_has_no_inline_script_style_or_handlers_and_loads_only_its_own_files():
    parser = _Tags()
    parser.feed((STATIC_DIR / "index.html").read_text())
    assert parser.script_text == ""
    for tag, attrs in parser.tags:
        assert tag != "style"
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "style" not in attrs, tag
        for ref in (attrs.get("src"), attrs.get("href")):
            assert ref is None or ref.startswith("/console/"), ref
    scripts = [a["src"] for t, a in parser.tags if t == "script"]
    assert scripts == ["/console/console.js"]


def test_the_script_never_turns_strings_into_html_or_code():
    source = (STATIC_DIR / "console.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "localStorage"):  # fmt: skip
        assert sink not in source, sink
    assert "sessionStorage" in source  # the key lives only as long as the tab
    assert not re.search(r"[?&](key|api_key|token)=", source)  # never in a URL


def test_console_pages_get_a_strict_policy_and_api_answers_a_closed_one():
    page = security_headers(console=True)
    csp = page["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page["X-Content-Type-Options"] == "nosniff"
    api = security_headers(console=False)
    assert api["Content-Security-Policy"].startswith("default-src 'none'")
    assert api["X-Content-Type-Options"] == "nosniff"
