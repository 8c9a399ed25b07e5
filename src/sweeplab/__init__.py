"""sweeplab: the classic deep-learning course experiments as reproducible runs, sweeps and reports."""

__version__ = "0.1.0"
