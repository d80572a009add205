"""Workflow executions: a customer moving through a workflow's steps."""
