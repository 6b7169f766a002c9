"""deepflow: validated, tracked, promoted bake-offs of shallow, deep and classical models."""

__version__ = "0.1.0"
