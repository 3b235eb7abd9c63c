"""Each coverage year's policy (premium, window, waiting periods, subsidies), versioned."""
