"""The version of nncompile: part of every compile-cache key and of every generated module."""
__version__ = "0.1.0"
