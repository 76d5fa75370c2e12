"""Model assistance: models and model kinds, train/predict jobs, predictions, pre-labels, embeddings."""
