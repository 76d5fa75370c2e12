"""Labelling: annotations, the work queue, review, agreement, users, the dashboard."""
