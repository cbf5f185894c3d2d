"""relayq's HTTP edge: FastAPI routes that authenticate, validate and call relayq."""
