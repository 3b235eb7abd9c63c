"""The receipt of a payment and the query-code slip of an enrolment, laid out on an A4 page.

Every human word goes through the catalog (`_`, `yuan`, `terms`); codes, numbers and dates are
printed as they are, so a clerk reads the same receipt number and code in any language.
"""

from __future__ import annotations

import io
from datetime import date

import msgspec
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import simpleSplit
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen.canvas import Canvas

from backend.i18n import _, terms, yuan

FONT = "STSong-Light"  # Adobe's CID font for simplified Chinese: every PDF reader has it, no file embedded
pdfmetrics.registerFont(UnicodeCIDFont(FONT))

WIDTH, HEIGHT = A4
LEFT, RIGHT, TOP = 20 * mm, WIDTH - 20 * mm, HEIGHT - 20 * mm
LINE = 6.5 * mm
PRODUCER = "Canbao"


class ReceiptMember(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    id_number_masked: str  # 110105********002X: never the full number on paper
    premium_fen: int | None  # the member's premium and subsidy for the year (a premium payment only)
    subsidy_fen: int | None
    paid_fen: int  # what this payment put towards the member


class ReceiptDocument(msgspec.Struct, frozen=True, kw_only=True):
    receipt_no: str
    verification_code: str  # printed in groups: ABCD-EFGH-JKMN
    coverage_year: int
    kind: str  # premium | back_payment
    back_years: list[int]
    household_no: str
    village: str  # the village's name (and its township's)
    address: str
    members: list[ReceiptMember]
    amount_fen: int
    method: str  # cash | qr | bank
    collector: str
    business_date: date
    query_code: str | None  # the household's code for the year, when the server made it
    voided: bool
    refunded_fen: int
    check_path: str  # where the verification code is checked


class SlipMember(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    id_number_masked: str


class QueryCodeSlip(msgspec.Struct, frozen=True, kw_only=True):
    coverage_year: int
    household_no: str
    village: str
    members: list[SlipMember]  # the members this enrolment registered
    query_code: str | None  # None: the household's code for the year was issued before
    issued_on: date


class _Page:
    """A cursor down one A4 page (a second page when a long household needs one)."""

    def __init__(self, title: str, subject: str) -> None:
        self.buffer = io.BytesIO()
        # invariant: no creation time, a fixed document id, so the same data gives the same bytes.
        self.canvas = Canvas(self.buffer, pagesize=A4, invariant=1, pageCompression=1)
        self.canvas.setTitle(title)
        self.canvas.setSubject(subject)
        self.canvas.setAuthor(PRODUCER)
        self.canvas.setCreator(PRODUCER)
        self.canvas.setProducer(PRODUCER)
        self.y = TOP

    def need(self, height: float) -> None:
        if self.y - height < 20 * mm:
            self.canvas.showPage()
            self.y = TOP

    def title(self, text: str) -> None:
        self.canvas.setFont(FONT, 16)
        self.canvas.drawCentredString(WIDTH / 2, self.y, text)
        self.y -= LINE * 1.8

    def line(self, text: str, size: float = 11) -> None:
        for part in simpleSplit(text, FONT, size, RIGHT - LEFT):
            self.need(LINE)
            self.canvas.setFont(FONT, size)
            self.canvas.drawString(LEFT, self.y, part)
            self.y -= LINE * size / 11

    def pair(self, left: str, right: str) -> None:
        self.need(LINE)
        self.canvas.setFont(FONT, 11)
        self.canvas.drawString(LEFT, self.y, left)
        self.canvas.drawString(LEFT + (RIGHT - LEFT) / 2, self.y, right)
        self.y -= LINE

    def row(self, cells: list[str], stops: list[float], size: float = 10) -> None:
        self.need(LINE)
        self.canvas.setFont(FONT, size)
        for cell, stop in zip(cells, stops, strict=True):
            self.canvas.drawString(LEFT + stop * (RIGHT - LEFT), self.y, cell)
        self.y -= LINE

    def rule(self) -> None:
        self.canvas.setLineWidth(0.5)
        self.canvas.line(LEFT, self.y + LINE * 0.6, RIGHT, self.y + LINE * 0.6)
        self.y -= LINE * 0.3

    def stamp(self, text: str) -> None:
        """A large word across the page (a voided receipt says so where no one can miss it)."""
        self.canvas.saveState()
        self.canvas.setFont(FONT, 48)
        self.canvas.setFillGray(0.6)
        self.canvas.translate(WIDTH / 2, HEIGHT * 0.62)
        self.canvas.rotate(20)
        self.canvas.drawCentredString(0, 0, text)
        self.canvas.restoreState()

    def bytes(self) -> bytes:
        self.canvas.showPage()
        self.canvas.save()
        return self.buffer.getvalue()


def _fen(fen: int | None) -> str:
    return "—" if fen is None else yuan(fen)


def render_receipt(doc: ReceiptDocument) -> bytes:
    """The receipt of one payment (参保缴费凭证), as a one-page PDF."""
    title = _("Resident basic medical insurance: receipt of payment")
    page = _Page(title, _("Receipt No.: {receipt_no}", receipt_no=doc.receipt_no))
    page.title(title)
    page.pair(
        _("Receipt No.: {receipt_no}", receipt_no=doc.receipt_no),
        _("Coverage year: {year}", year=doc.coverage_year),
    )
    page.pair(
        _("Household No.: {household_no}", household_no=doc.household_no),
        _("Village: {village}", village=doc.village),
    )
    if doc.address:
        page.line(_("Address: {address}", address=doc.address))
    page.y -= LINE * 0.3
    stops = [0.0, 0.22, 0.52, 0.68, 0.84]
    page.row([_("Name"), _("Citizen ID number"), _("Premium"), _("Subsidy"), _("Paid now")], stops)
    page.rule()
    for m in doc.members:
        page.row([m.name, m.id_number_masked, _fen(m.premium_fen), _fen(m.subsidy_fen), yuan(m.paid_fen)], stops)
    page.rule()
    premiums = [m.premium_fen for m in doc.members if m.premium_fen is not None]
    subsidies = [m.subsidy_fen for m in doc.members if m.subsidy_fen is not None]
    if doc.kind == "premium":
        page.pair(
            _("Total premium: {amount}", amount=yuan(sum(premiums))),
            _("Government subsidy: {amount}", amount=yuan(sum(subsidies))),
        )
    page.pair(
        _("Amount paid: {amount}", amount=yuan(doc.amount_fen)),
        _("Payment method: {method}", method=terms.name("payment_method", doc.method) or doc.method),
    )
    page.pair(
        _("Kind of payment: {kind}", kind=terms.name("payment_kind", doc.kind) or doc.kind),
        _("Date of payment: {date}", date=doc.business_date.isoformat()),
    )
    if doc.back_years:
        page.line(_("Back payment for: {years}", years=", ".join(str(y) for y in doc.back_years)))
    page.line(_("Collector: {collector}", collector=doc.collector))
    if doc.query_code is not None:
        page.line(_("Query code: {code}", code=doc.query_code))
    if doc.voided:
        page.line(_("This payment was voided."))
        page.stamp(_("VOID"))
    elif doc.refunded_fen:
        page.line(_("Refunded: {amount}", amount=yuan(doc.refunded_fen)))
    page.y -= LINE * 0.5
    page.line(_("Verification code: {code}", code=doc.verification_code), size=13)
    page.line(
        _(
            "Anyone can check that this receipt is genuine at {path} with its receipt number and verification code.",
            path=doc.check_path,
        ),
        size=9,
    )
    return page.bytes()


def render_query_code_slip(slip: QueryCodeSlip) -> bytes:
    """The slip handed to a household when it is enrolled: who was enrolled, and its query code."""
    title = _("Resident basic medical insurance: enrolment slip and query code")
    page = _Page(title, _("Coverage year: {year}", year=slip.coverage_year))
    page.title(title)
    page.pair(
        _("Household No.: {household_no}", household_no=slip.household_no),
        _("Village: {village}", village=slip.village),
    )
    page.pair(
        _("Coverage year: {year}", year=slip.coverage_year),
        _("Date of enrolment: {date}", date=slip.issued_on.isoformat()),
    )
    page.y -= LINE * 0.3
    stops = [0.0, 0.4]
    page.row([_("Name"), _("Citizen ID number")], stops)
    page.rule()
    for m in slip.members:
        page.row([m.name, m.id_number_masked], stops)
    page.rule()
    page.y -= LINE * 0.5
    if slip.query_code is None:
        page.line(
            _(
                "The household's query code for {year} was issued before: it is on its first slip and on every "
                "receipt.",
                year=slip.coverage_year,
            )
        )
    else:
        page.line(_("Query code: {code}", code=slip.query_code), size=16)
        page.line(
            _(
                "Keep this slip. With a member's citizen ID number, name and this code, the household can see "
                "its enrolment, payments and cover. The code is printed only here and on receipts."
            ),
            size=10,
        )
    return page.bytes()
