"""The hub: an event-driven data-sharing hub for agencies that reduce reoffending."""

__version__ = "0.1.0"
