"""Retrieval: the two-tower model, the ANN index and the candidate sources."""
