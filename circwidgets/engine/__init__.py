"""The framework's mathematics as pure functions of weights and activations (no widgets)."""
