"""Who is calling: ``caller`` (a request's key or token tenant, with its scopes and
allowed models), ``jwt`` (bearer JWTs from configured issuers, verified) and ``jwks``
(an issuer's published keys, kept)."""
