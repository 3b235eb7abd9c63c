"""How a route answers with a printed document: the PDF's media type, its OpenAPI response, headers."""

from __future__ import annotations

from litestar import Response
from litestar.openapi import ResponseSpec

PDF = "application/pdf"
PDF_RESPONSE = ResponseSpec(
    bytes, media_type=PDF, generate_examples=False, description="The document, a PDF in the request's language"
)


def pdf_response(body: bytes, name: str, status_code: int = 200) -> Response[bytes]:
    """Shown in the browser (inline), never kept by a cache: it names people."""
    return Response(
        body,
        status_code=status_code,
        media_type=PDF,
        headers={"Content-Disposition": f'inline; filename="{name}"', "Cache-Control": "no-store"},
    )
