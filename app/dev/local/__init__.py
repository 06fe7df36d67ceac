"""The local development stack behind ``fvc local``: real Kafka (KRaft) and Redis, no Docker."""
