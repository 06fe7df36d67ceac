"""Development tools: the local Kafka and Redis (``fvc local``), isolated runs, demo, bench."""
