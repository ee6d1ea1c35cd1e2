"""Django's PostgreSQL backend, with a pool checkout that replaces killed connections at once."""
