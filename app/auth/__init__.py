"""JWT authentication, the request principal and role guards."""
