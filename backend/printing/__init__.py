"""Printed documents (PDF): the payment receipt (参保缴费凭证) and the household's query-code slip.

Pure: a Struct in, the PDF's bytes out, in the current language; no network, no clock (the same
data gives the same bytes). reportlab's built-in CJK font (STSong-Light) needs no font file.
"""
