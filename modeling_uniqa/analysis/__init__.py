"""Looking into a model and a collection: text-to-image retrieval over an embedding index, contact
sheets, Grad-CAM explanations."""
