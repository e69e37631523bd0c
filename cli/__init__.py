"""The ``elmsearch`` command line (Typer): declarations and presentation only."""
