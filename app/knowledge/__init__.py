"""The knowledge base: documents split into embedded chunks, searched by hybrid retrieval."""
