"""The SQL archive: the record that outlives Redis (DESIGN principle 10).

``models`` (tables) and ``alembic/`` (migrations), ``db`` (engines, schema check), ``archiver``
(Redis queue -> SQL, idempotent), ``retention`` (final refunds leave Redis once archived),
``service`` (one ``archive.drain`` round), ``reads`` (Redis or the archive, the caller does not
know which), ``export_rows``/``export_files`` (finance exports with manifests). The Redis side
(queue, lock, eviction, tombstones) is ``refunds.store.archive_queue``.
"""
