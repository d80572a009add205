"""Customers, their contracts and account teams."""
