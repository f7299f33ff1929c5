"""Adapters to the outside world, each integration behind one small interface with a registry
(app.integrations.registry): tax providers (``tax``), shop platforms (``platforms``), and
channels that deliver invoices to buyers (``delivery``). Adapters speak the real wire formats;
the fake providers they are tested against live outside ``app/`` (the ``sandbox`` package)."""
