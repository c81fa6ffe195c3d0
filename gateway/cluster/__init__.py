"""Several gateway processes on one broker and one PostgreSQL: ingest replicas and the lead dispatcher."""
