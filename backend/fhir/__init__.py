"""FHIR R4 for partners (hospitals, pharmacies): is this person covered on this date, and their Coverage."""
