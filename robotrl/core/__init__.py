"""Shared core used by every agent: networks, buffers, normalisers, distributions, checkpoint I/O."""
