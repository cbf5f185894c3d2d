"""relayq's benchmarks and chaos runs (loopback only)."""
