"""Detection transfer's pieces: the recipe, batches, training loop, model, evaluation and the detectron2 backend."""
