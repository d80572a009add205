"""Tenants and users."""
