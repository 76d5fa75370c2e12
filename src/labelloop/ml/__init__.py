"""Pure machine-learning building blocks: arrays in, arrays out."""
