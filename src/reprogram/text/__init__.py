"""Class texts: description files, sampling, packaged sets, generation with an LLM."""
