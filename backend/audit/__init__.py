"""The audit trail: who did what, when, from which device, to which record; reads of personal data too."""
