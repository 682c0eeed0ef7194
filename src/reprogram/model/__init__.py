"""Method parts and the model they build: prompts, text features, aggregations, PRM."""
