"""Wire-level fake vendor servers for tests, on 127.0.0.1."""
