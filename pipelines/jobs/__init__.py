"""A job's life: its row (submit, claim, finish), the runner actors call, and following its events."""
