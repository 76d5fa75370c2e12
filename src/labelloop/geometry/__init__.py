"""Conversions between shape representations (pure numpy + pycocotools)."""
