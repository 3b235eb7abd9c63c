"""Offline tablets: push of mutations exactly once, gap-free pull, quarantine (SPEC §3)."""
