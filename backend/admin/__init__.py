"""Administration by the district: users, devices (tablets) and partners (hospital systems)."""
