"""The HTTP API's routes, one module per audience: intake, operator, MCE's webhook, ops."""
