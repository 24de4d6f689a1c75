"""Integrations of the engine into other libraries' own generation loops (imported on demand)."""
