"""conta_core: the torch core of the CONTA workflow (no Snakemake imports here)."""
__version__ = "0.1.0"
