"""Premium collection (代收医疗保险费): receipt blocks, payments recorded exactly once, voids and
refunds as approved events, daily cash remittance (解缴)."""
