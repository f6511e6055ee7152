"""Shared matplotlib figures, one module per topic."""
