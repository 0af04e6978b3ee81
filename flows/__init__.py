"""Prefect flows (PET, iPET, the full pipeline) and the petflow CLI."""
