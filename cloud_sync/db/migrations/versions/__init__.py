"""Migration scripts, oldest first (``NNNN_slug.py``); Alembic loads them by path, not by import."""
