"""Residents (参保人): log in with ID number, name and the household's query code; see the household's cover."""
