"""A worker's moving parts, independent of Faust: pipeline, outbox, publisher, metrics."""
