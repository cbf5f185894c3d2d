"""``python -m relayq.cli``: the same as the ``relayq`` command."""

from relayq.cli.main import main

main()
