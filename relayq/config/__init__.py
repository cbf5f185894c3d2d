"""What an operator declares: the process settings read from the environment
(:mod:`~relayq.config.settings`, with the JWT issuers of :mod:`~relayq.config.auth`),
and the providers, model routes and prices of the routing file
(:mod:`~relayq.config.routes`, :mod:`~relayq.config.prices`).

Everything here is data: pydantic models and the loading of a file, with no
I/O beyond reading it, so every other package may import it. One
:class:`~relayq.config.settings.Settings` is built per process and passed
explicitly from there on.
"""
