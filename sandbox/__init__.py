"""Fake providers for the demo and the tests, outside the application: the sandbox tax service
(``sandbox.tax``, run by ``kaipiao sandbox-tax``). They speak the real wire formats and verify
signatures, so Kaipiao's real adapters are what talks to them; nothing here is imported by
``app/`` except the commands that start them."""
