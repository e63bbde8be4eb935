"""scorer app: gives each enriched task a priority score (an emulated slow model)."""
