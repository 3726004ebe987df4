"""Recipes that build the data phi4lab ships: the curated corpus (``corpus``), phi4-tiny (``tiny``)
and the induction phase-change runs (``induction``). Each is deterministic and hash-checked."""
