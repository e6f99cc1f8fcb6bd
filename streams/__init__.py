"""Shinsa's Kafka plumbing: the Faust app, topics, records, codec, settings, CLI and local stack."""
