"""Batchwise: training as a service for people who want to understand and choose batch sizes."""

__version__ = "0.1.0"
