"""Alembic's migration environment for every cloud table (``env.py``, ``versions/``).

A package so that an installed wheel carries it and Alembic finds it as ``cloud_sync.db:migrations``
wherever the package lives; run it through ``cloud_sync.db.upgrade`` or ``edge cloud db``.
"""
