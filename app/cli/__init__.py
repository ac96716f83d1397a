"""``multusctl``: the operator's command line. Heavy imports stay lazy so it starts fast."""
