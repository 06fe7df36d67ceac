"""The Faust side of a worker: its app, the ingest agent, the timers and the HTTP pages."""
