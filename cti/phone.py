"""Caller numbers: one canonical form for what arrives on an Asterisk trunk.

Pure: no I/O.  ``phonenumbers`` (Google's libphonenumber metadata) decides
what is a valid Chinese mobile or landline; the code below only strips the
prefixes trunks really send and refuses anything that is not a phone number.

Canonical forms (what ``customer_phones.phone`` holds, ``national``):

* mobile    -- 11 digits, ``13800138000``
* landline  -- trunk ``0`` + area code + subscriber, ``07735551234``, ``01012345678``
* other     -- everything valid but neither of the above:
    - a local landline without area code (7-8 digits, ``5551234``): kept as
      its digits, ``e164`` is ``None`` (the area is unknown -- the caller's
      own exchange; see ``lookup_keys(area_code=...)``);
    - Chinese non-geographic numbers (400/800 service numbers): national digits;
    - foreign numbers: ``00`` + country code + number, as dialled from China
      (``0012025550123``), ``e164`` set.

Decisions on ambiguous input
* ``7735551234`` (10-11 digits, no leading 0, not a mobile): Chinese subscriber
  numbers have at most 8 digits, so a longer national number that is not a
  mobile can only be area code + subscriber with the trunk 0 stripped (some
  carriers do this).  It is read as the landline ``07735551234`` when
  libphonenumber says that landline is valid; otherwise ``None``.
* ``86`` + 10-11 digits without ``+``/``00`` (``8613800138000``): the country
  code without the international prefix, as several SIP trunks send it.  No
  national number starts with 86 and is that long, so it is safe.
* ``013800138000``: a mobile behind the trunk prefix 0 (a landline trunk
  dialling out to a mobile) -- the mobile ``13800138000``.
* 7-8 digits starting 2-9 without any prefix: a local landline, kind 'other'.
  We do not invent an area code here (the caller owns that knowledge).
* An 11-digit ``1[3-9]...`` number libphonenumber does not know yet (new
  number ranges appear faster than the metadata) is still taken as a mobile:
  the carrier's caller ID is the authority, a lost screen-pop costs more.
* Short service codes (110, 95598, 12345), anything with letters, unicode
  (full-width, Arabic-Indic) digits, ``*``/``#``, markup, or longer than 40
  characters: ``None``.  ``normalise_phone`` never raises.

``normalise_phone(n.national)`` returns ``n`` again (the canonical form is a
fixed point), so a stored number can be re-normalised safely.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

__all__ = ["NormalisedPhone", "PhoneKind", "normalise_phone", "lookup_keys"]

PhoneKind = Literal["mobile", "landline", "other"]

MAX_RAW_LENGTH = 40
# ASCII only on purpose: str.isdigit() and \d accept unicode digits.
_ALLOWED = re.compile(r"\+?[0-9 \-().]*\Z", re.ASCII)
_MOBILE = re.compile(r"1[3-9][0-9]{9}\Z", re.ASCII)
_LOCAL = re.compile(r"[2-9][0-9]{6,7}\Z", re.ASCII)

_FIXED_TYPES = {PhoneNumberType.FIXED_LINE}
_MOBILE_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}


@dataclass(frozen=True, slots=True)
class NormalisedPhone:
    national: str              # canonical digits, as stored in customer_phones.phone
    e164: str | None           # +8613800138000; None for a local number without area code
    kind: PhoneKind

    def __str__(self) -> str:
        return self.national


def normalise_phone(raw: str | None) -> NormalisedPhone | None:
    """The canonical form of a caller number, or ``None`` if it is not one.
    Memoised (a bounded LRU): phonenumbers' parse and format cost about half
    a millisecond, and every milestone of a call asks again."""
    if not isinstance(raw, str):
        return None
    return _normalise_cached(raw)


@functools.lru_cache(maxsize=20_000)
def _normalise_cached(raw: str) -> NormalisedPhone | None:
    try:
        return _normalise(raw)
    except Exception:  # defensive: hostile input must never take a call down
        return None


def lookup_keys(raw: str | None, *, area_code: str | None = None) -> list[str]:
    """The ``customer_phones.phone`` values to try for a caller number, best first.

    Always the canonical form first.  With the utility's own ``area_code``
    (e.g. ``"0773"``) a second key bridges records typed without it:

    * a landline in that area also tries its bare subscriber number
      (``07735551234`` -> ``5551234``);
    * a local number without area code also tries that area's landline
      (``5551234`` -> ``07735551234``).

    Without ``area_code`` no guess is made: ``5551234`` in another city is
    someone else.
    """
    n = normalise_phone(raw)
    if n is None:
        return []
    keys = [n.national]
    area = _digits(area_code or "")
    if not area:
        return keys
    if not area.startswith("0"):
        area = "0" + area
    if n.kind == "landline" and n.national.startswith(area):
        sub = _subscriber_part(n)
        if sub and sub not in keys and n.national == area + sub:
            keys.append(sub)
    elif n.kind == "other" and n.e164 is None:
        full = normalise_phone(area + n.national)
        if full is not None and full.kind == "landline" and full.national not in keys:
            keys.append(full.national)
    return keys


# -- internals ---------------------------------------------------------------

def _digits(s: str) -> str:
    return "".join(ch for ch in s if "0" <= ch <= "9")


def _normalise(raw: str | None) -> NormalisedPhone | None:
    if not isinstance(raw, str):
        return None
    s = raw.strip()
    if not s or len(s) > MAX_RAW_LENGTH or not _ALLOWED.match(s):
        return None
    plus = s.startswith("+")
    digits = _digits(s)
    if not 3 <= len(digits) <= 17:
        return None

    # international prefix: +CC..., 00CC...
    if plus or digits.startswith("00"):
        intl = digits if plus else digits[2:]
        if intl.startswith("86"):
            return _national(intl[2:], had_country=True)
        return _foreign(intl)
    # 86 + national number without + or 00
    if digits.startswith("86") and len(digits) in (12, 13):
        return _national(digits[2:], had_country=True)
    return _national(digits, had_country=False)


def _national(nat: str, *, had_country: bool) -> NormalisedPhone | None:
    if not nat or len(nat) > 13:
        return None
    if not had_country and _LOCAL.match(nat):
        # a subscriber number without area code; libphonenumber would read
        # 5551234 as the landline 055-51234, which is not what the caller meant
        return NormalisedPhone(national=nat, e164=None, kind="other")
    try:
        num = phonenumbers.parse(nat, "CN")
    except phonenumbers.NumberParseException:
        num = None
    if num is not None and num.country_code == 86 and phonenumbers.is_valid_number(num):
        ntype = phonenumbers.number_type(num)
        national = _digits(phonenumbers.format_number(num, PhoneNumberFormat.NATIONAL))
        e164 = phonenumbers.format_number(num, PhoneNumberFormat.E164)
        if ntype in _MOBILE_TYPES and _MOBILE.match(national):
            return NormalisedPhone(national, e164, "mobile")
        if ntype in _FIXED_TYPES:
            if not national.startswith("0"):
                national = "0" + national
            return NormalisedPhone(national, e164, "landline")
        return NormalisedPhone(national, e164, "other")
    # a mobile range newer than the metadata (with or without trunk 0)
    bare = nat[1:] if nat.startswith("0") and len(nat) == 12 else nat
    if _MOBILE.match(bare):
        return NormalisedPhone(bare, "+86" + bare, "mobile")
    return None


def _foreign(intl: str) -> NormalisedPhone | None:
    try:
        num = phonenumbers.parse("+" + intl, None)
    except phonenumbers.NumberParseException:
        return None
    if num.country_code == 86 or not phonenumbers.is_valid_number(num):
        return None
    e164 = phonenumbers.format_number(num, PhoneNumberFormat.E164)
    return NormalisedPhone("00" + e164[1:], e164, "other")


def _subscriber_part(n: NormalisedPhone) -> str | None:
    """``07735551234`` -> ``5551234`` (the area code is 2-3 digits after the 0)."""
    if n.e164 is None:
        return None
    try:
        num = phonenumbers.parse(n.e164, None)
    except phonenumbers.NumberParseException:
        return None
    nsn = phonenumbers.national_significant_number(num)
    area_len = phonenumbers.length_of_geographical_area_code(num)
    if area_len <= 0:
        return None
    sub = nsn[area_len:]
    return sub if _LOCAL.match(sub) else None
