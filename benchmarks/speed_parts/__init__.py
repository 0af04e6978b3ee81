"""Measurement groups of benchmarks/speed.py, one module per group; speed.py is the entry point."""
