"""Weighted Multi-Token Prediction research on code LLMs."""

__version__ = "0.1.0"
