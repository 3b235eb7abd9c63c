"""Civil-affairs lists (民政名单), eligibility answers with explanations, claims and exclusion reviews."""
