"""Households, members, the yearly policy and enrolments (参保登记): the core of the domain."""
