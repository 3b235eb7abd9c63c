"""Pure rules of the resident medical insurance: identity numbers, coverage dates, premiums.

Nothing here does I/O or imports the web stack or the database driver (stdlib and msgspec only),
because the offline tablet client runs these same functions: one tested implementation, shared.
"""
