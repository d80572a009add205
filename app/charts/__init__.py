"""Charts: Vega-Lite specs built from tool input, rendered to SVG and PNG, served per tenant."""
