"""Inside the model: what it predicts, where it looks, where it struggles, drawn for people."""
