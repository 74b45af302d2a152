"""The console's icons: inline SVG drawn here (24-unit grid, stroked), so no file or font is
fetched for them and they take the text colour."""

from __future__ import annotations

from markupsafe import Markup

_PATHS = {
    "key": "M15 7a4 4 0 1 0-3.9 4.9L4 19v2h3v-2h2v-2h2l1.1-1.1A4 4 0 0 0 15 7z M16 6h.01",
    "grid": "M4 4h7v7H4z M13 4h7v7h-7z M4 13h7v7H4z M13 13h7v7h-7z",
    "home": "M3 11l9-7 9 7 M5 10v10h14V10",
    "alarm": "M12 3l9 16H3z M12 10v4 M12 17h.01",
    "check": "M5 12l5 5 9-10",
    "online": "M5 12a7 7 0 0 1 14 0 M8.5 12a3.5 3.5 0 0 1 7 0 M12 12h.01",
    "offline": "M4 4l16 16 M5 12a7 7 0 0 1 9-6.7 M12 12h.01",
    "user": "M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8z M4 21a8 8 0 0 1 16 0",
    "out": "M10 4H5v16h5 M14 8l4 4-4 4 M18 12H9",
    "plus": "M12 5v14 M5 12h14",
    "arrow-left": "M15 6l-6 6 6 6",
    "arrow-right": "M9 6l6 6-6 6",
}


_SVG = (
    '<svg class="icon" viewBox="0 0 24 24" width="20" height="20" fill="none" '
    'stroke="currentColor" stroke-width="2" stroke-linecap="round" '
    'stroke-linejoin="round" focusable="false" {a11y}><path d="{d}"/></svg>'
)


def icon(name: str, label: str | None = None) -> Markup:
    """An icon; decorative (hidden from screen readers) unless it has a ``label``."""
    # ``format`` escapes what it fills in: the label is text, never markup.
    a11y = (
        Markup('role="img" aria-label="{}"').format(label)
        if label
        else Markup('aria-hidden="true"')
    )
    return Markup(_SVG).format(a11y=a11y, d=_PATHS[name])  # noqa: S704 - our constant
