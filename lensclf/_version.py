"""The package version, in one place (imported by the package and by the model file format)."""

__version__ = "0.1.0"
