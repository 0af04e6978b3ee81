"""Prefect tasks: one thin task per pet_core stage, plus validation and reports."""
