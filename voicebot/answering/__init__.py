"""Answerers: question (pivot or user language) → grounded Answer with sources."""
