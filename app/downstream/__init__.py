"""Readers of the event topic: the wire format in, views and re-identification out."""
