"""Benchmarks: Pushsite against a raw-asyncio reference server and django-eventstream."""
