"""Metadata storage for elmsearch (SQLAlchemy 2.x): patients, sessions, recordings, reports.

Imports ``elmsearch`` never; ``indexer`` and ``cli`` import it.
"""
