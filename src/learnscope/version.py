"""The package's version (as pyproject.toml says it): a leaf, so that any layer may record it without
importing the package's entry point."""

__version__ = "0.1.0"
