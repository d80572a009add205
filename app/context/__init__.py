"""The workflow context of a customer: the variables every template renders with."""
