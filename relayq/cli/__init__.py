"""The ``relayq`` command line."""
