"""The HTTP face: FastAPI app (intake, operator actions, MCE webhook, health, metrics)."""
