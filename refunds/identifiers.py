"""The character sets of the identifiers a merchant hands over, and the one check of them.

Why a set of its own, not "any string": an identifier travels in a URL path (``GET
/refunds/{clientReference}``), in a provider query string, in a CSV cell and in an operator's
terminal. A character a person cannot see (U+200B ZERO WIDTH SPACE, U+FEFF, U+202E RIGHT-TO-LEFT
OVERRIDE), a control character (U+0000, a newline) or a look-alike from another script (the
Cyrillic letters U+0422 U+0425 in "TX-1001") makes two identifiers that read the same differ, or
one that a URL cannot carry. So identifiers are printable ASCII from a documented set, and a
refusal names the field,
the character (code point and Unicode name) and its position (1-based), e.g.
``originalTransactionId: U+200B ZERO WIDTH SPACE at position 3 is not allowed``.

The sets (documented in the README; widening one is a public-interface change):

- ``clientReference``: 1 to 64 of ``A-Z a-z 0-9`` and ``- _ . : @ + =``. It is a URL path
  segment, so no ``/`` (a path separator even when percent-encoded: servers decode it before
  routing), no ``#``/``?`` (fragment and query delimiters), no ``%``; and not ``.`` or ``..``,
  which every standard HTTP client removes from a path as dot segments (RFC 3986 5.2.4).
- ``originalTransactionId``: 1 to 128 of ``A-Z a-z 0-9`` and ``- _ . : / @ # + =``: MCE's ids,
  on-chain hashes (hex) and output references (``hash:0``, ``hash#0``). It is sent to MCE
  byte-exact, as given: never case-folded or trimmed.
"""

from __future__ import annotations

import string
import unicodedata

_LETTERS_DIGITS = string.ascii_letters + string.digits

#: The punctuation each identifier may carry besides ASCII letters and digits.
REFERENCE_PUNCTUATION = "-_.:@+="
TRANSACTION_ID_PUNCTUATION = "-_.:/@#+="

REFERENCE_MAX = 64
TRANSACTION_ID_MAX = 128

_REFERENCE_CHARS = frozenset(_LETTERS_DIGITS + REFERENCE_PUNCTUATION)
_TRANSACTION_ID_CHARS = frozenset(_LETTERS_DIGITS + TRANSACTION_ID_PUNCTUATION)

#: Names of the C0 controls people meet in data (unicodedata has no name for controls).
_CONTROL_NAMES = {
    0x00: "NULL",
    0x09: "CHARACTER TABULATION",
    0x0A: "LINE FEED",
    0x0B: "LINE TABULATION",
    0x0C: "FORM FEED",
    0x0D: "CARRIAGE RETURN",
    0x1B: "ESCAPE",
    0x7F: "DELETE",
    0x85: "NEXT LINE",
}

_KIND = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Zs": "a space",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
    "Cs": "a surrogate",
}


def describe(char: str) -> str:
    """``U+200B ZERO WIDTH SPACE``: the code point and its Unicode name (or what kind it is)."""
    code = ord(char)
    name = unicodedata.name(char, "") or _CONTROL_NAMES.get(code, "")
    if not name:
        name = _KIND.get(unicodedata.category(char), "a character without a name")
    return f"U+{code:04X} {name}"


def bad_character(value: str, allowed: frozenset[str], what: str) -> str | None:
    """The refusal for the first character of ``value`` outside ``allowed``, or None.

    ``what`` says what is allowed, for the message. Characters that are not printable ASCII also
    say what kind they are, since their name alone (``RIGHT-TO-LEFT OVERRIDE``) may not tell a
    reader why it matters.
    """
    for position, char in enumerate(value, start=1):
        if char in allowed:
            continue
        kind = ""
        if not (char.isascii() and char.isprintable()):
            category = unicodedata.category(char)
            kind = f", {_KIND[category]}" if category in _KIND else ", not ASCII"
        return f"{describe(char)} at position {position} is not allowed{kind} (allowed: {what})"
    return None


def reference_problem(value: str) -> str | None:
    """Why ``value`` is not a ``clientReference`` (None: it is one); length is checked apart."""
    if value in {".", ".."}:
        return (
            f"{value!r} is not a reference: HTTP clients remove it from a URL path "
            "(a dot segment), so it could never be read back"
        )
    return bad_character(
        value, _REFERENCE_CHARS, "ASCII letters, digits and " + " ".join(REFERENCE_PUNCTUATION)
    )


def transaction_id_problem(value: str) -> str | None:
    """Why ``value`` is not an ``originalTransactionId`` (None: it is one)."""
    return bad_character(
        value,
        _TRANSACTION_ID_CHARS,
        "ASCII letters, digits and " + " ".join(TRANSACTION_ID_PUNCTUATION),
    )

#: The same sets as regular expressions, for the OpenAPI schema (what a client or fuzzer reads);
#: the refusal itself comes from the checks above, which name the character.
#: (No look-ahead in pydantic's regex engine: "not . or .." is "a non-dot somewhere, or 3+ dots".)
REFERENCE_PATTERN = r"^(?:[A-Za-z0-9\-_.:@+=]*[A-Za-z0-9\-_:@+=][A-Za-z0-9\-_.:@+=]*|\.{3,})$"
TRANSACTION_ID_PATTERN = r"^[A-Za-z0-9\-_.:/@#+=]+$"
