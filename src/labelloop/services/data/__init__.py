"""Data in and out: importing, exporting, items, stats, the data a model kind trains on."""
