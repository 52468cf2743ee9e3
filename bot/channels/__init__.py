"""Channels: thin adapters that turn a platform's updates into events and render replies."""
