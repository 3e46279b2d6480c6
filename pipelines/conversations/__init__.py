"""Conversations: messages, agent turns (durable steps, streamed), their context, memory tools, rolling summaries."""
