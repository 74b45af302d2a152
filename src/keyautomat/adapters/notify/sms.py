"""SMS text rules: the GSM-7 alphabet, folding into it, and counting segments.

A message in GSM-7 fits 160 characters in one segment and 153 per segment when
split; one character outside GSM-7 turns the whole message into UCS-2 (70, then
67 per segment). So before counting, letters that GSM-7 lacks but can spell
without their accent (``ê`` → ``e``, ``ç`` → ``c``) are folded, which keeps a
French message in GSM-7.
"""

from __future__ import annotations

import math
import unicodedata

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
_REPLACEMENTS = {
    "\u00a0": " ",
    "\u202f": " ",
    "\u2009": " ",
    "\u2013": "-",
    "\u2014": "-",
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2026": "...",
}


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def fold_to_gsm7(text: str) -> str:
    """Replace characters GSM-7 lacks by their nearest GSM-7 spelling where one exists."""
    out: list[str] = []
    for ch in text:
        if ch in GSM7_BASIC or ch in GSM7_EXTENSION:
            out.append(ch)
            continue
        if ch in _REPLACEMENTS:
            out.append(_REPLACEMENTS[ch])
            continue
        bare = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        out.append(bare if bare and is_gsm7(bare) else ch)
    return "".join(out)


def segments(text: str) -> int:
    """How many SMS segments ``text`` takes."""
    if is_gsm7(text):
        units = sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
        return 1 if units <= 160 else math.ceil(units / 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)
