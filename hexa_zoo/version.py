"""The package version (pyproject.toml says the same), importable by any module without `hexa_zoo/__init__`'s
model registration."""

__version__ = "0.1.0"
