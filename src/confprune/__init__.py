"""confprune: certified neural-network pruning with Learn-Then-Test."""
__version__ = "0.1.0"
