"""Pseudo-mask expansion methods, chosen by name with ``expand.method``."""
