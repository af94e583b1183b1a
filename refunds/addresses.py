"""Refund addresses: where the money goes, checked before it goes.

Two checks, at two moments:

1. **At intake** (every path: ``submit_refund``, the CLI, a batch file, ``POST /refunds``), when
   the chain is not known yet (the intent has no chain field): the address is printable ASCII
   without spaces. Whitespace, control, invisible format characters (U+200B, U+FEFF, U+202E) and
   non-ASCII look-alikes (full-width digits) are refused with the field and the character named.
   Where the form alone says what the address is, its checksum is checked too: ``0x`` and 40 hex
   digits is an EVM address (EIP-55 when its case is mixed), and a ``bc1``/``tb1`` bech32 address
   in mixed case is invalid for any chain (BIP-173).
2. **Before Confirm**, once MCE's Create answer says the refund's ``blockchain``: the address must
   have that chain's form and checksum (:func:`problem_for_chain`), else the refund stops in
   ``needs_attention`` with ``ADDRESS_INVALID`` and Confirm is never sent.

The chains, by the names MCE may use (compared case-insensitively; documented in the README):

============================================ ================================================
blockchain                                   the address
============================================ ================================================
ETH ETHEREUM ERC20 BSC BNB BEP20 POLYGON     ``0x`` + 40 hex digits; EIP-55 checksum when the
MATIC ARBITRUM ARB OPTIMISM OP BASE AVAX     case is mixed (all-lower or all-upper case carry
AVAXC AVALANCHE FANTOM FTM LINEA             no checksum)
TRON TRX TRC20                               base58check, 25 bytes with the 0x41 prefix (T...)
BTC BITCOIN                                  bech32 (witness v0, BIP-173) or bech32m (v1+,
                                             BIP-350) with hrp ``bc``, one case; or
                                             base58check P2PKH (0x00) / P2SH (0x05)
SOL SOLANA                                   base58 of a 32-byte key (no checksum exists)
============================================ ================================================

Any other chain: the intake check only (no pattern is guessed for a chain we do not know).

The checksums come from kept libraries: ``eth-hash`` (keccak-256), ``base58`` (base58check) and
``bech32`` (BIP-173's reference polymod; BIP-350's bech32m constant is the spec's).

Same intent: EVM addresses are case-insensitive (the case is only a checksum), so two intents
whose EVM addresses differ only in case are the same intent (:func:`comparable`); the spelling
kept and sent to MCE is the merchant's first one, exactly.
"""

from __future__ import annotations

import re
import string

import base58
from bech32 import CHARSET, bech32_hrp_expand, bech32_polymod, convertbits
from eth_hash.auto import keccak

from refunds.identifiers import bad_character

ADDRESS_INVALID = "ADDRESS_INVALID"

#: Printable ASCII without the space: what any chain's address is written in.
_ADDRESS_CHARS = frozenset(string.printable) - frozenset(string.whitespace)

_EVM = re.compile(r"0x[0-9a-fA-F]{40}", re.ASCII)
_BECH32_PREFIX = re.compile(r"(bc|tb|bcrt)1", re.IGNORECASE | re.ASCII)
_BECH32M_CONST = 0x2BC830A3  # BIP-350

EVM_CHAINS = frozenset(
    {
        "ETH", "ETHEREUM", "ERC20", "BSC", "BNB", "BEP20", "POLYGON", "MATIC", "ARBITRUM", "ARB",
        "OPTIMISM", "OP", "BASE", "AVAX", "AVAXC", "AVALANCHE", "FANTOM", "FTM", "LINEA",
    }
)
TRON_CHAINS = frozenset({"TRON", "TRX", "TRC20"})
BTC_CHAINS = frozenset({"BTC", "BITCOIN"})
SOLANA_CHAINS = frozenset({"SOL", "SOLANA"})


def intake_problem(address: str) -> str | None:
    """Why ``address`` cannot be a refund address on any chain (None: it may be one)."""
    bad = bad_character(address, _ADDRESS_CHARS, "printable ASCII without spaces")
    if bad is not None:
        return bad
    if _EVM.fullmatch(address):
        return _evm_problem(address)
    if _BECH32_PREFIX.match(address) and address.lower() != address != address.upper():
        return "a bech32 address in mixed case is invalid (BIP-173): send it in one case"
    return None


def family(blockchain: str | None) -> str | None:
    """"evm", "tron", "btc", "sol", or None for a chain without a known address form."""
    name = (blockchain or "").strip().upper()
    for found, names in (
        ("evm", EVM_CHAINS),
        ("tron", TRON_CHAINS),
        ("btc", BTC_CHAINS),
        ("sol", SOLANA_CHAINS),
    ):
        if name in names:
            return found
    return None


def problem_for_chain(address: str, blockchain: str | None) -> str | None:
    """Why ``address`` is not an address on ``blockchain`` (None: it is, or the chain's form is
    not known)."""
    bad = intake_problem(address)
    if bad is not None:
        return bad
    kind = family(blockchain)
    if kind is None:
        return None
    check = {"evm": _evm_problem, "tron": _tron_problem, "btc": _btc_problem, "sol": _sol_problem}
    problem = check[kind](address)
    return None if problem is None else f"not an address on {blockchain}: {problem}"


def comparable(address: str | None) -> str | None:
    """The form two addresses are compared in for "same intent": EVM ones in lower case (their
    case is only a checksum), every other one exactly as given."""
    if address is not None and _EVM.fullmatch(address):
        return address.lower()
    return address


# --- per chain ---------------------------------------------------------------------------------


def eip55(address: str) -> str:
    """The EIP-55 spelling of an EVM address (``0x`` + 40 hex digits, any case)."""
    hexpart = address[2:].lower()
    digest = keccak(hexpart.encode("ascii")).hex()
    return "0x" + "".join(
        c.upper() if int(d, 16) >= 8 else c for c, d in zip(hexpart, digest, strict=False)
    )


def _evm_problem(address: str) -> str | None:
    if not _EVM.fullmatch(address):
        return "an EVM address is 0x and 40 hex digits"
    hexpart = address[2:]
    if hexpart in (hexpart.lower(), hexpart.upper()):
        return None  # one case: no checksum to check
    if address != eip55(address):
        return "its mixed case does not match its EIP-55 checksum (a typo, or not this address)"
    return None


def _tron_problem(address: str) -> str | None:
    try:
        raw = base58.b58decode_check(address)
    except ValueError:
        return "a TRON address is base58check (T and 33 more characters); its checksum fails"
    if len(raw) != 21 or raw[0] != 0x41:
        return "a TRON address decodes to 21 bytes starting 0x41"
    return None


def _btc_problem(address: str) -> str | None:
    if _BECH32_PREFIX.match(address):
        return _segwit_problem(address, "bc")
    try:
        raw = base58.b58decode_check(address)
    except ValueError:
        return "neither bech32 (bc1...) nor base58check"
    if len(raw) != 21 or raw[0] not in (0x00, 0x05):
        return "a base58 bitcoin address is P2PKH (1...) or P2SH (3...)"
    return None


def _segwit_problem(address: str, hrp: str) -> str | None:
    """BIP-173/BIP-350 segwit address rules (bech32 for witness v0, bech32m for v1 to v16)."""
    if address.lower() != address != address.upper():
        return "mixed case (BIP-173)"
    text = address.lower()
    sep = text.rfind("1")
    if text[:sep] != hrp or len(text) > 90 or sep + 7 > len(text):
        return f"a segwit address starts {hrp}1 and is at most 90 characters"
    if any(c not in CHARSET for c in text[sep + 1 :]):
        return "a character outside the bech32 alphabet"
    data = [CHARSET.index(c) for c in text[sep + 1 :]]
    const = bech32_polymod(bech32_hrp_expand(hrp) + data)
    version = data[0]
    if const != (1 if version == 0 else _BECH32M_CONST):
        return "its bech32 checksum fails"
    program = convertbits(data[1:-6], 5, 8, False)
    if version > 16 or program is None or not 2 <= len(program) <= 40:
        return "not a witness program"
    if version == 0 and len(program) not in (20, 32):
        return "a witness v0 program is 20 or 32 bytes"
    return None


def _sol_problem(address: str) -> str | None:
    try:
        raw = base58.b58decode(address)
    except ValueError:
        return "a Solana address is base58"
    if len(raw) != 32:
        return "a Solana address is a base58 32-byte key"
    return None
