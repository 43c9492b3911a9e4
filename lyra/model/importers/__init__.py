"""Importers of other toolkits' trained models into Lyra checkpoints (`lyra import ...`)."""
