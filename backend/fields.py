"""Text patterns of request fields, each with the rule it checks in plain words.

A validation error names the rule a value broke; a regular expression is no answer for a clerk, so
every pattern a body, query or path parameter uses is declared here with its words, and the error
handler shows the words instead of the expression.
"""

from __future__ import annotations

PATTERN_RULES: dict[str, tuple[str, dict[str, str]]] = {}


def rule(pattern: str, words: str, **params: str) -> str:
    """Registers `pattern` with the words that say what it requires (a message of the catalogs,
    its `{fields}` from `params`), and returns the pattern."""
    PATTERN_RULES[pattern] = (words, params)
    return pattern


DIVISION_CODE = rule(r"^[0-9]{12}$", "must be a 12-digit division code (统计用区划代码)")
DIVISION_PREFIX = rule(r"^[0-9]{0,12}$", "must be a division code: up to 12 digits")
NOT_BLANK = rule(r"^(?!\s*$)[^\x00]*$", "must not be blank or contain NUL characters")
NO_NUL = rule(r"^[^\x00]*$", "must not contain NUL characters")
USERNAME = rule(r"^[A-Za-z0-9_.@-]{3,64}$", "must be 3 to 64 letters, digits or . _ @ -")
LIST_TYPE = rule(r"^[a-z][a-z0-9_]{1,39}$", "must be 2 to 40 lowercase letters, digits or _, starting with a letter")
JOB_KIND = rule(r"^[a-z_]{1,40}$", "must be a job kind such as list_import")
PHONE = rule(r"^[0-9+-]{5,20}$", "must be 5 to 20 digits, + or -")
HOUSEHOLD_NO = rule(r"^[0-9A-Za-z-]{1,30}$", "must be 1 to 30 letters, digits or -")
RECEIPT_NO = rule(r"^[A-Z0-9]{4,20}$", "must be 4 to 20 capital letters or digits")
RECEIPT_PREFIX = rule(r"^[A-Z]{0,8}$", "must be at most 8 capital letters")


def one_of(*choices: str) -> str:
    """A pattern that admits exactly `choices`, registered with their list."""
    return rule("^(" + "|".join(choices) + ")$", "must be one of: {values}", values=", ".join(choices))
