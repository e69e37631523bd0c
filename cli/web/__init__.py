"""The HTTP front end (``elmsearch serve``): an API and a search page over ``indexer.service``."""
