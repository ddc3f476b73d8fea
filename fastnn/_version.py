"""The package version, in a module of its own so that any part of fastnn can read it without
importing the package root (whose imports reach nearly everything)."""
__version__ = "0.1.0"
