"""Archives to try elmsearch on: the seeded demo archive, and EEGMAT laid out as a TUH archive."""
