"""Converters from public medical image-text sets to this project's pretraining JSON (see docs/data_at_scale.md)."""
