"""The CPU toy world: synthetic tasks, a word-level tokenizer, and a tiny Llama teacher trained from scratch."""
