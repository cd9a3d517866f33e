"""`format: html` requests: html split into markup (kept as written) and text nodes (translated), then joined back
with the translations; the API (`lslo.serve.api`) answers an `HtmlError` with 400."""

from __future__ import annotations

import html
from html.parser import HTMLParser
from typing import Any


class HtmlError(ValueError):
    """Html whose tags do not nest or that does not parse; the message is the API's error text."""


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
_RAW = {"script", "style"}  # their text is not translated


class _Html(HTMLParser):
    """Splits html into markup (kept as written) and text nodes (translated); checks that tags nest."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[tuple[bool, str]] = []  # (is text, content)
        self.open: list[str] = []
        self.problem: str | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.parts.append((False, self.get_starttag_text() or ""))
        if tag not in _VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: Any) -> None:
        self.parts.append((False, self.get_starttag_text() or ""))

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            self.parts.append((False, f"</{tag}>"))
            return
        if not self.open or self.open[-1] != tag:
            self.problem = self.problem or f"</{tag}> closes {'<' + self.open[-1] + '>' if self.open else 'nothing'}"
        else:
            self.open.pop()
        self.parts.append((False, f"</{tag}>"))

    def handle_data(self, data: str) -> None:
        raw = bool(self.open) and self.open[-1] in _RAW
        self.parts.append((not raw and bool(data.strip()), data))

    def handle_comment(self, data: str) -> None:
        self.parts.append((False, f"<!--{data}-->"))

    def handle_decl(self, decl: str) -> None:
        self.parts.append((False, f"<!{decl}>"))

    def handle_pi(self, data: str) -> None:
        self.parts.append((False, f"<?{data}>"))

    def unknown_decl(self, data: str) -> None:
        self.parts.append((False, f"<![{data}]>"))


def split_html(text: str) -> list[tuple[bool, str]]:
    """Markup and text parts of `text`; `HtmlError` (the API answers it with 400) when its tags do not nest."""
    p = _Html()
    try:
        p.feed(text)
        p.close()
    except Exception as err:  # noqa: BLE001 - html.parser raises little, but whatever it raises is bad input
        raise HtmlError(f"Invalid request: html does not parse ({err})") from None
    if p.problem is None and p.open:
        p.problem = f"<{p.open[-1]}> is never closed"
    if p.problem:
        raise HtmlError(f"Invalid request: html does not parse ({p.problem})")
    return p.parts


def join_html(parts: list[tuple[bool, str]], translations: list[str]) -> str:
    """The markup with each text part replaced by its translation (outer whitespace kept, escaped)."""
    out, it = [], iter(translations)
    for is_text, content in parts:
        if not is_text:  # markup, whitespace, script/style content: as written
            out.append(content)
            continue
        lead = content[: len(content) - len(content.lstrip())]
        trail = content[len(content.rstrip()) :]
        out.append(lead + html.escape(next(it), quote=False) + trail)
    return "".join(out)
