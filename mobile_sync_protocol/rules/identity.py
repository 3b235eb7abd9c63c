"""Resident identity numbers (公民身份号码, GB 11643-1999) and newborns' birth-certificate numbers.

Parsing normalises what staff type or paste, checks the number and reads the birth date and sex
it encodes. Errors carry a stable code; no error message ever repeats the number.
"""

from __future__ import annotations

import re
from datetime import date
from operator import mul
from typing import Literal

import msgspec

__all__ = [
    "BirthCertificateNumber",
    "IdentityErrorCode",
    "IdentityNumberError",
    "ResidentIdNumber",
    "Sex",
    "check_character",
    "mask",
    "normalise",
    "parse_birth_certificate_number",
    "parse_identity",
    "parse_resident_id",
]

Sex = Literal["male", "female"]

IdentityErrorCode = Literal[
    "empty",
    "bad_length",
    "bad_characters",
    "bad_checksum",
    "bad_birth_date",
    "future_birth_date",
    "scientific_notation",
    "birth_date_mismatch",
    "sex_mismatch",
]

# ISO 7064 MOD 11-2 as GB 11643 writes it out: weight 2^(17-i) mod 11 for the i-th of 17 digits.
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARACTERS = "10X98765432"  # indexed by (Σ digit × weight) mod 11
_ZEROS = ord("0") * sum(_WEIGHTS)  # Σ ord(digit) × weight, less this, is Σ digit × weight

_TO_ASCII = str.maketrans(
    {chr(0xFF10 + i): chr(0x30 + i) for i in range(10)}  # full-width ０-９
    | {chr(0xFF21 + i): chr(0x41 + i) for i in range(26)}  # full-width Ａ-Ｚ
    | {chr(0xFF41 + i): chr(0x41 + i) for i in range(26)}  # full-width ａ-ｚ, upper-cased
)
_WHITESPACE = re.compile(r"\s+")
# What a spreadsheet shows once it has stored an 18-digit number as a float: 4.40524188001E+17.
_SCIENTIFIC = re.compile(r"[0-9]+(?:\.[0-9]*)?E[+-]?[0-9]+")
_DECIMAL = re.compile(r"[0-9]+\.[0-9]*")
_RESIDENT_CHARACTERS = re.compile(r"[0-9]*[0-9X]")
_BIRTH_CERTIFICATE = re.compile(r"[A-Z][0-9]{9}")


def N_(message: str) -> str:
    """Marks a message for the server's translation catalog (this package imports no backend)."""
    return message


class IdentityNumberError(ValueError):
    """An identity number that cannot be accepted; `code` is stable, `message` is for people.

    The message explains what is wrong without repeating the number, so it can be shown, returned
    in an API error or logged.
    """

    def __init__(self, code: IdentityErrorCode, template: str, **params: object) -> None:
        message = template.format(**params) if params else template
        super().__init__(f"{code}: {message}")
        self.code: IdentityErrorCode = code
        self.message = message
        # For a server that speaks another language: `template` is the English message with its
        # `{fields}` (marked for its catalog), `params` what fills them.
        self.template = template
        self.params = params


class ResidentIdNumber(msgspec.Struct, frozen=True, kw_only=True, tag="resident_id"):
    """An accepted 18-character resident identity number and what it encodes."""

    number: str  # normalised: 17 ASCII digits and a check character, `X` upper-case
    birth_date: date
    sex: Sex
    converted_from_15: bool = False  # entered as a first-generation 15-digit number


class BirthCertificateNumber(msgspec.Struct, frozen=True, kw_only=True, tag="birth_certificate"):
    """A newborn's birth-certificate number (出生医学证明编号), used until the ID number is issued.

    It encodes neither birth date nor sex; those come from what staff enter.
    """

    number: str  # normalised: one upper-case ASCII letter and nine ASCII digits


def normalise(raw: str) -> str:
    """What staff meant: whitespace (also the ideographic space) removed, full-width digits and
    letters made ASCII, letters upper-cased (so `x` and `Ｘ` become `X`)."""
    if raw.isascii() and raw.isalnum():  # as typed on a keyboard: nothing to remove or translate
        return raw.upper()
    return _WHITESPACE.sub("", raw).translate(_TO_ASCII).upper()


def check_character(first_17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of 17 ASCII digits (`X` stands for 10)."""
    if len(first_17) != 17 or not first_17.isascii() or not first_17.isdigit():
        raise ValueError("the check character is computed over exactly 17 ASCII digits")
    # The digits' code points times the weights, summed in C (an eligibility check parses 10,000).
    total = sum(map(mul, first_17.encode("ascii"), _WEIGHTS)) - _ZEROS
    return _CHECK_CHARACTERS[total % 11]


def parse_resident_id(
    raw: str, *, today: date, birth_date: date | None = None, sex: Sex | None = None
) -> ResidentIdNumber:
    """Accept an 18-digit resident identity number, or a 15-digit one converted to 18 digits.

    Checked, in this order: not empty; not a spreadsheet's scientific notation; only digits (and
    a final `X` in an 18-character number); 18 or 15 characters; the check character (18 only);
    the encoded birth date is a real date and not after `today`; it equals `birth_date` and the
    encoded sex equals `sex` when those are given. The 6-digit area code is not checked against
    any list: abolished codes remain valid for life.

    A 15-digit number (GB 11643-1989, birth year as 2 digits, no check character) becomes 18 by
    inserting `19` before the year and appending the computed check character.
    """
    number = normalise(raw)
    _reject_non_numeric(number)
    if len(number) not in (15, 18):
        raise IdentityNumberError(
            "bad_length",
            N_(
                "has {length} characters; a resident identity number has 18 "
                "(or 15 for a first-generation number). Digits may have been lost: re-enter it from the card."
            ),
            length=len(number),
        )
    converted = len(number) == 15
    if converted:
        if number.endswith("X"):
            raise IdentityNumberError("bad_characters", N_("a 15-digit number has digits only"))
        number = number[:6] + "19" + number[6:]
        number += check_character(number)
    elif check_character(number[:17]) != number[17]:
        if number.endswith("000"):
            raise IdentityNumberError(
                "bad_checksum",
                N_(
                    "the check character does not match; a digit is wrong. It ends in 000, which is what a "
                    "spreadsheet leaves after storing it as a number; re-enter it as text."
                ),
            )
        raise IdentityNumberError("bad_checksum", N_("the check character does not match; a digit is wrong."))

    encoded_birth_date = _birth_date(number[6:14])
    if encoded_birth_date > today:
        raise IdentityNumberError("future_birth_date", N_("the birth date it encodes is in the future"))
    encoded_sex: Sex = "male" if int(number[16]) % 2 == 1 else "female"
    if birth_date is not None and birth_date != encoded_birth_date:
        raise IdentityNumberError("birth_date_mismatch", N_("the birth date entered differs from the one it encodes"))
    if sex is not None and sex != encoded_sex:
        raise IdentityNumberError("sex_mismatch", N_("the sex entered differs from the one it encodes"))
    return ResidentIdNumber(number=number, birth_date=encoded_birth_date, sex=encoded_sex, converted_from_15=converted)


def parse_birth_certificate_number(raw: str) -> BirthCertificateNumber:
    """Accept a birth-certificate number: one letter then nine digits (a lower-case letter is
    upper-cased by normalisation)."""
    number = normalise(raw)
    if not number:
        raise IdentityNumberError("empty", N_("no birth-certificate number was entered"))
    if not number.isascii() or not number.isalnum():
        raise IdentityNumberError("bad_characters", N_("a birth-certificate number has one letter and nine digits"))
    if len(number) != 10:
        raise IdentityNumberError(
            "bad_length",
            N_("has {length} characters; a birth-certificate number has 10 (one letter, nine digits)"),
            length=len(number),
        )
    if not _BIRTH_CERTIFICATE.fullmatch(number):
        raise IdentityNumberError(
            "bad_characters", N_("a birth-certificate number is one letter followed by nine digits")
        )
    return BirthCertificateNumber(number=number)


def parse_identity(
    raw: str, *, today: date, birth_date: date | None = None, sex: Sex | None = None
) -> ResidentIdNumber | BirthCertificateNumber:
    """Either kind, told apart by the first character: a letter starts a birth-certificate number.

    `birth_date` and `sex` are checked only against a resident identity number, which encodes them.
    """
    number = normalise(raw)
    if number[:1].isalpha():
        return parse_birth_certificate_number(number)
    return parse_resident_id(number, today=today, birth_date=birth_date, sex=sex)


def mask(id_number: str) -> str:
    """A hint for humans that keeps the length: `110105********002X`.

    15 characters or more (resident identity numbers): first 6 and last 4 shown. 8 to 14
    (birth-certificate numbers): first 1 and last 3. Shorter: nothing shown.
    """
    number = normalise(id_number)
    if len(number) >= 15:
        head, tail = 6, 4
    elif len(number) >= 8:
        head, tail = 1, 3
    else:
        return "*" * len(number)
    return number[:head] + "*" * (len(number) - head - tail) + number[-tail:]


def _reject_non_numeric(number: str) -> None:
    if number.isascii() and number[:-1].isdigit() and (number[-1].isdigit() or number[-1] == "X"):
        return  # digits, perhaps a final X: nothing below refuses it
    if not number:
        raise IdentityNumberError("empty", N_("no identity number was entered"))
    if _SCIENTIFIC.fullmatch(number):
        raise IdentityNumberError(
            "scientific_notation",
            N_(
                "is in scientific notation: a spreadsheet stored it as a number and lost its last digits, "
                "which cannot be recovered. Re-enter it from the card, as text."
            ),
        )
    if _DECIMAL.fullmatch(number):
        raise IdentityNumberError(
            "bad_characters",
            N_(
                "contains a decimal point: a spreadsheet probably stored it as a number. "
                "Re-enter it from the card, as text."
            ),
        )
    if not number.isascii() or not _RESIDENT_CHARACTERS.fullmatch(number):
        raise IdentityNumberError(
            "bad_characters", N_("may contain only digits, and X as the last character of an 18-character number")
        )


def _birth_date(yyyymmdd: str) -> date:
    try:
        return date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:]))
    except ValueError:
        raise IdentityNumberError("bad_birth_date", N_("the birth date it encodes is not a real date")) from None
