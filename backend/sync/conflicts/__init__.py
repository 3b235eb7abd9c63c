"""Sync conflicts: what a push could not merge on its own, and the reviewers who settle it."""
