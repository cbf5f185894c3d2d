"""Tests of the provider adapters, against the mock and wire-level fake vendors."""
