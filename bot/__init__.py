"""Hulpwijzer: triage and a personal plan for people hit by online abuse."""

__version__ = "0.1.0"
