"""Discovery: find executions through Blink's list endpoint (docs/discovery.md)."""
