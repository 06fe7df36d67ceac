"""fvc: online clustering of face and body feature vectors into identities."""

__version__ = "0.1.0"
