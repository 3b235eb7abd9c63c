"""Staff authentication: passwords, JWT access tokens, rotating refresh tokens, devices, scope."""
