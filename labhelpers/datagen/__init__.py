"""Seeded generators of the project's dialogue data (the tiny profile's dialogues, the committed sets in data/)."""
