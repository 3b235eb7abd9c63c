"""Administrative divisions (行政区划): district → township → village, by 12-digit statistical code."""
