"""Webhooks: endpoints of an organization (hooks.py), Standard Webhooks signatures (signing.py), the outbox
that turns events into `webhook_delivery` jobs (outbox.py) and the delivery job itself (deliver.py)."""
