"""Resident identity numbers (GB 11643-1999) and birth-certificate numbers; no database needed.

Expected check characters were worked out by hand from the standard's weights, never by the code
under test; 11010519491231002X and 440524188001010014 are the standard's own examples.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mobile_sync_protocol.rules.identity import (
    BirthCertificateNumber,
    IdentityNumberError,
    ResidentIdNumber,
    Sex,
    check_character,
    mask,
    normalise,
    parse_birth_certificate_number,
    parse_identity,
    parse_resident_id,
)

TODAY = date(2025, 6, 1)


@pytest.mark.parametrize(
    ("raw", "number", "birth_date", "sex"),
    [
        ("11010519491231002X", "11010519491231002X", date(1949, 12, 31), "female"),
        ("440524188001010014", "440524188001010014", date(1880, 1, 1), "male"),
        ("110105194912310038", "110105194912310038", date(1949, 12, 31), "male"),
        ("330106202402291230", "330106202402291230", date(2024, 2, 29), "male"),
        ("33010619900101000X", "33010619900101000X", date(1990, 1, 1), "female"),
        ("330106202506010026", "330106202506010026", date(2025, 6, 1), "female"),  # born today
    ],
)
def test_valid_18_digit_number_yields_birth_date_and_sex(raw: str, number: str, birth_date: date, sex: Sex) -> None:
    parsed = parse_resident_id(raw, today=TODAY)
    assert parsed == ResidentIdNumber(number=number, birth_date=birth_date, sex=sex, converted_from_15=False)


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        ("11010519491231002x", "11010519491231002X"),  # lower-case x
        ("11010519491231002Ｘ", "11010519491231002X"),  # full-width X
        ("11010519491231002ｘ", "11010519491231002X"),  # full-width x
        ("１１０１０５１９４９１２３１００２Ｘ", "11010519491231002X"),  # all full-width
        (" 110105 19491231 002X ", "11010519491231002X"),  # spaces
        ("110105\u300019491231\u3000002X", "11010519491231002X"),  # ideographic spaces
        ("440524\t188001010014\n", "440524188001010014"),  # tab and newline from a pasted cell
    ],
)
def test_input_is_normalised_before_checking(raw: str, number: str) -> None:
    assert parse_resident_id(raw, today=TODAY).number == number


@pytest.mark.parametrize(
    ("first_17", "check"),
    [
        ("11010519491231002", "X"),  # Σ mod 11 = 2
        ("44052418800101001", "4"),
        ("11010519491231003", "8"),
        ("33010620240229123", "0"),
        ("33010619800229041", "6"),
        ("44052419800101001", "3"),
    ],
)
def test_check_character_is_iso_7064_mod_11_2(first_17: str, check: str) -> None:
    assert check_character(first_17) == check


@pytest.mark.parametrize(
    ("raw", "number", "birth_date", "sex"),
    [
        ("110105491231002", "11010519491231002X", date(1949, 12, 31), "female"),
        ("330106800229041", "330106198002290416", date(1980, 2, 29), "male"),
        ("440524800101001", "440524198001010013", date(1980, 1, 1), "male"),
    ],
)
def test_15_digit_number_is_converted_to_18_and_flagged(raw: str, number: str, birth_date: date, sex: Sex) -> None:
    parsed = parse_resident_id(raw, today=TODAY)
    assert parsed == ResidentIdNumber(number=number, birth_date=birth_date, sex=sex, converted_from_15=True)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("4.40524188001E+17", "scientific_notation"),
        ("4.40524188001e+17", "scientific_notation"),
        ("4.40524E+17", "scientific_notation"),
        ("4.40524188001E17", "scientific_notation"),
        ("440524188001010014.0", "bad_characters"),  # a float formatted with decimals
        ("440524-18800101-0014", "bad_characters"),
        ("44052418800101001A", "bad_characters"),
        ("4405241880010X0014", "bad_characters"),  # X only as the check character
        ("44052418800101X", "bad_characters"),  # a 15-digit number has no check character
        ("440524١٨٨٠٠١٠١٠٠١٤", "bad_characters"),  # Arabic-Indic digits are digits, but not ours
        ("44052418800101001", "bad_length"),  # lost a digit
        ("4405241880010100140", "bad_length"),
        ("4405241880010", "bad_length"),
        ("440524188001010013", "bad_checksum"),
        ("440524188001010000", "bad_checksum"),  # what Excel leaves after 15 significant digits
        ("11010519491231002 0", "bad_checksum"),  # a 0 typed for the X
        ("330106202302290011", "bad_birth_date"),  # 29 Feb 2023; check character right
        ("330106810229001", "bad_birth_date"),  # 15 digits: 29 Feb 1981
        ("330106203001010017", "future_birth_date"),
        ("330106202506020021", "future_birth_date"),  # tomorrow
    ],
)
def test_unacceptable_numbers_are_rejected_with_a_stable_code(raw: str, code: str) -> None:
    with pytest.raises(IdentityNumberError) as caught:
        parse_resident_id(raw, today=TODAY)
    assert caught.value.code == code


def test_scientific_notation_is_rejected_never_reconstructed() -> None:
    with pytest.raises(IdentityNumberError) as caught:
        parse_resident_id("4.40524188001E+17", today=TODAY)
    assert caught.value.code == "scientific_notation"
    assert "spreadsheet" in caught.value.message


def test_area_code_is_not_checked_against_any_list() -> None:
    # 999999 is no area code at all; an abolished code is just as acceptable.
    parsed = parse_resident_id("99999919900101000" + check_character("99999919900101000"), today=TODAY)
    assert parsed.birth_date == date(1990, 1, 1)


@pytest.mark.parametrize(
    ("raw", "birth_date", "sex", "code"),
    [
        ("11010519491231002X", date(1949, 12, 30), None, "birth_date_mismatch"),
        ("11010519491231002X", None, "male", "sex_mismatch"),
        ("440524188001010014", None, "female", "sex_mismatch"),
        ("110105491231002", date(2049, 12, 31), None, "birth_date_mismatch"),  # 15-digit years are 19xx
    ],
)
def test_entered_birth_date_and_sex_must_agree_with_the_number(
    raw: str, birth_date: date | None, sex: Sex | None, code: str
) -> None:
    with pytest.raises(IdentityNumberError) as caught:
        parse_resident_id(raw, today=TODAY, birth_date=birth_date, sex=sex)
    assert caught.value.code == code


def test_entered_birth_date_and_sex_that_agree_are_accepted() -> None:
    parsed = parse_resident_id("11010519491231002X", today=TODAY, birth_date=date(1949, 12, 31), sex="female")
    assert parsed.number == "11010519491231002X"


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        ("M440012345", "M440012345"),
        ("m440012345", "M440012345"),
        ("Ｏ４４００１２３４５", "O440012345"),
        (" Q 440 012 345 ", "Q440012345"),
    ],
)
def test_birth_certificate_number_is_one_letter_and_nine_digits(raw: str, number: str) -> None:
    assert parse_birth_certificate_number(raw) == BirthCertificateNumber(number=number)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", "empty"),
        ("M44001234", "bad_length"),
        ("M4400123456", "bad_length"),
        ("4400123456", "bad_characters"),
        ("MM40012345", "bad_characters"),
        ("M44001234X", "bad_characters"),
        ("M440-12345", "bad_characters"),
    ],
)
def test_malformed_birth_certificate_numbers_are_rejected(raw: str, code: str) -> None:
    with pytest.raises(IdentityNumberError) as caught:
        parse_birth_certificate_number(raw)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "11010519491231002X",
            ResidentIdNumber(number="11010519491231002X", birth_date=date(1949, 12, 31), sex="female"),
        ),
        ("M440012345", BirthCertificateNumber(number="M440012345")),
    ],
)
def test_identity_kind_is_told_by_the_first_character(raw: str, expected: object) -> None:
    assert parse_identity(raw, today=TODAY) == expected


def test_identity_kinds_are_tagged_on_the_wire() -> None:
    decoder = msgspec.json.Decoder(ResidentIdNumber | BirthCertificateNumber)
    encoded = b'{"type":"birth_certificate","number":"M440012345"}'
    assert decoder.decode(encoded) == BirthCertificateNumber(number="M440012345")
    assert msgspec.json.encode(BirthCertificateNumber(number="M440012345")) == encoded


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("11010519491231002X", "110105********002X"),
        ("110105491231002", "110105*****1002"),
        ("11010519491231002x", "110105********002X"),
        ("M440012345", "M******345"),
        ("12345", "*****"),
        ("", ""),
    ],
)
def test_mask_shows_first_6_and_last_4_of_an_id_number(number: str, masked: str) -> None:
    assert mask(number) == masked


# ---- properties -------------------------------------------------------------------------------

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)

areas = st.from_regex(r"[1-9][0-9]{5}", fullmatch=True)
births = st.dates(min_value=date(1900, 1, 1), max_value=TODAY)
sequences = st.integers(min_value=0, max_value=999).map(lambda n: f"{n:03d}")


def _oracle_check(first_17: str) -> str:
    """An independent restatement: the check value c makes Σ aᵢ·2^(18-i) + c ≡ 1 (mod 11)."""
    total = sum(int(d) * pow(2, 17 - i, 11) for i, d in enumerate(first_17))
    c = (1 - total) % 11
    return "X" if c == 10 else str(c)


@st.composite
def valid_numbers(draw: st.DrawFn) -> tuple[str, date, str]:
    area, birth, seq = draw(areas), draw(births), draw(sequences)
    first_17 = f"{area}{birth:%Y%m%d}{seq}"
    return first_17 + _oracle_check(first_17), birth, seq


@given(valid_numbers())
def test_any_valid_number_round_trips_with_its_birth_date_and_sex(case: tuple[str, date, str]) -> None:
    number, birth, seq = case
    parsed = parse_resident_id(number, today=TODAY)
    assert parsed.number == number
    assert parsed.birth_date == birth
    assert parsed.sex == ("male" if int(seq[2]) % 2 else "female")
    assert not parsed.converted_from_15


@given(valid_numbers(), st.integers(min_value=0, max_value=17), st.integers(min_value=1, max_value=9))
def test_any_single_digit_error_is_caught(case: tuple[str, date, str], position: int, shift: int) -> None:
    number = case[0]
    original = 10 if number[position] == "X" else int(number[position])
    wrong = (original + shift) % 11
    if position < 17 and wrong == 10:
        wrong = (wrong + 1) % 11
    typo = number[:position] + ("X" if wrong == 10 else str(wrong)) + number[position + 1 :]
    with pytest.raises(IdentityNumberError) as caught:
        parse_resident_id(typo, today=TODAY)
    assert caught.value.code == "bad_checksum"


@given(valid_numbers(), st.integers(min_value=0, max_value=16))
def test_any_transposition_of_different_adjacent_digits_is_caught(case: tuple[str, date, str], position: int) -> None:
    number = case[0]
    a, b = number[position], number[position + 1]
    assume(a != b and "X" not in (a, b))
    swapped = number[:position] + b + a + number[position + 2 :]
    with pytest.raises(IdentityNumberError):
        parse_resident_id(swapped, today=TODAY)


@given(areas, st.dates(min_value=date(1900, 1, 1), max_value=date(1999, 12, 31)), sequences)
def test_15_digit_conversion_keeps_every_digit_and_adds_19(area: str, birth: date, seq: str) -> None:
    old = f"{area}{birth:%y%m%d}{seq}"
    parsed = parse_resident_id(old, today=TODAY)
    assert parsed.converted_from_15
    assert parsed.number[:6] + parsed.number[8:17] == old
    assert parsed.number[6:8] == "19"
    assert parsed.number[17] == _oracle_check(parsed.number[:17])
    assert parsed.birth_date == birth


@given(valid_numbers())
def test_full_width_input_means_the_same_as_ascii(case: tuple[str, date, str]) -> None:
    number = case[0]
    full_width = "".join(chr(ord(c) - 0x30 + 0xFF10) if c.isdigit() else "ｘ" for c in number)
    assert parse_resident_id(full_width, today=TODAY) == parse_resident_id(number, today=TODAY)


@given(valid_numbers(), st.integers(min_value=1, max_value=3650))
def test_birth_date_after_today_is_rejected(case: tuple[str, date, str], days_before: int) -> None:
    number, birth, _ = case
    with pytest.raises(IdentityNumberError) as caught:
        parse_resident_id(number, today=birth - timedelta(days=days_before))
    assert caught.value.code == "future_birth_date"


@given(st.text(alphabet="0123456789Xx .E+-０１２３４５６７８９", max_size=25))
def test_errors_never_repeat_the_number(raw: str) -> None:
    try:
        parse_resident_id(raw, today=TODAY)
    except IdentityNumberError as e:
        digits = normalise(raw)
        if len(digits) >= 6:
            assert digits not in str(e)
            assert digits[:6] not in e.message


@given(valid_numbers())
def test_mask_keeps_length_and_hides_the_birth_date(case: tuple[str, date, str]) -> None:
    number = case[0]
    masked = mask(number)
    assert len(masked) == 18
    assert masked[:6] == number[:6]
    assert masked[-4:] == number[-4:]
    assert masked[6:14] == "********"


def test_oracle_agrees_with_the_standards_examples() -> None:
    # The property tests lean on _oracle_check; it must itself give the known answers.
    assert _oracle_check("11010519491231002") == "X"
    assert _oracle_check("44052418800101001") == "4"
    assert sum(int(d) * w for d, w in zip("11010519491231002", _WEIGHTS, strict=True)) % 11 == 2


# What staff type or paste, and what spreadsheets leave: ASCII digits and letters, the characters
# of scientific and decimal notation, whitespace of several kinds (the ideographic space among
# them), full-width digits and letters, and digits of other scripts that `str.isdigit` accepts.
_TYPED = "0123456789XxEe.+-aZ \t\u3000\u00a0０１２３４５６７８９ＸｘＡ²٣"


def _reference_normalise(raw: str) -> str:
    """`normalise` as first written: remove whitespace, translate full-width, upper-case."""
    full_width = {chr(0xFF10 + i): chr(0x30 + i) for i in range(10)}
    full_width |= {chr(0xFF21 + i): chr(0x41 + i) for i in range(26)}
    full_width |= {chr(0xFF41 + i): chr(0x41 + i) for i in range(26)}
    return "".join(raw.split()).translate(str.maketrans(full_width)).upper()


def _outcome(raw: str) -> object:
    try:
        return parse_resident_id(raw, today=TODAY)
    except IdentityNumberError as e:
        return e.code


def _reference_outcome(raw: str) -> object:
    """What parsing answered before its fast paths: each check of the docstring, in its order, the
    long way (regular expressions, the oracle's sum)."""
    number = _reference_normalise(raw)
    if not number:
        return "empty"
    if re.fullmatch(r"[0-9]+(?:\.[0-9]*)?E[+-]?[0-9]+", number):
        return "scientific_notation"
    if re.fullmatch(r"[0-9]+\.[0-9]*", number) or not re.fullmatch(r"[0-9]*[0-9X]", number, re.ASCII):
        return "bad_characters"
    if len(number) not in (15, 18):
        return "bad_length"
    if len(number) == 15 and number.endswith("X"):
        return "bad_characters"
    first_17 = number[:6] + "19" + number[6:] if len(number) == 15 else number[:17]
    if len(number) == 18 and _oracle_check(first_17) != number[17]:
        return "bad_checksum"
    try:
        born = date(int(first_17[6:10]), int(first_17[10:12]), int(first_17[12:14]))
    except ValueError:
        return "bad_birth_date"
    return "future_birth_date" if born > TODAY else None


@given(st.text(alphabet=_TYPED, max_size=20))
def test_normalise_keeps_to_its_first_definition(raw: str) -> None:
    # The fast path for what a keyboard types must mean what the long way means.
    assert normalise(raw) == _reference_normalise(raw)


@given(
    st.text(alphabet=_TYPED, max_size=20)
    | st.tuples(st.from_regex(r"[0-9]{14,18}", fullmatch=True), st.text(alphabet=_TYPED, max_size=2)).map("".join)
)
def test_parsing_refuses_what_the_long_way_refuses(raw: str) -> None:
    # The fast paths (keyboard input, all digits, the sum in C) accept nothing the checks in their
    # documented order refuse, and refuse nothing they accept, with the same code.
    ours, reference = _outcome(raw), _reference_outcome(raw)
    assert (ours if isinstance(ours, str) else None) == reference


@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_check_character_agrees_with_the_oracle_for_any_17_digits(first_17: str) -> None:
    assert check_character(first_17) == _oracle_check(first_17)


@pytest.mark.parametrize(
    "first_17", ["1101051949123100", "110105194912310021", "1101051949123100X", "１１０１０５１９４９１２３１００２"]
)
def test_check_character_refuses_anything_but_17_ascii_digits(first_17: str) -> None:
    with pytest.raises(ValueError):
        check_character(first_17)
