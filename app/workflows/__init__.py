"""Workflows: configs, versions, saved actions, chat branches and the context they render with."""
