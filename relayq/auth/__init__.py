"""Who is calling: ``caller`` (a request's key or token tenant, with its scopes and
allowed models). JWT verification lives here once issuers are configured."""
