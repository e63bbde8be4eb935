"""enricher app: tags tasks from their text."""
