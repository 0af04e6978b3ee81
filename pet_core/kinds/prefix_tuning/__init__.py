"""Prefix tuning and P-tuning v2: learned keys and values at every layer of a frozen LM."""
