"""Alembic's migration environment for every cloud table (``env.py``, ``versions/``).

A package so that an installed wheel carries it and Alembic finds it as ``cloud_sync.db:migrations``
wherever the package lives; run it through ``cloud_sync.db.upgrade`` or ``edge cloud db``.

A schema change is a new revision, never an edit of an old one. Change the ``Table`` in
``cloud_sync/db``, then let Alembic draft the revision against a database at the current head
and review it (``tests/cloud_service/test_migrations.py`` fails until tables and revisions agree)::

    python -c "from alembic import command; from cloud_sync.db import alembic_config, make_engine
    make_engine('sqlite:///draft.db'); cfg = alembic_config()
    cfg.set_main_option('sqlalchemy.url', 'sqlite:///draft.db')
    command.revision(cfg, 'what changed', rev_id='0003', autogenerate=True)"
"""
