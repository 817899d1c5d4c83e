"""The hub: an event-driven data-sharing hub for agencies that work together to reduce reoffending."""

__version__ = "0.1.0"
