"""LLM threads: messages, runs that stream replies, tool calls and their context."""
