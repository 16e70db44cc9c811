"""One module per family of verbs; ``jobs.tasks`` dispatches to them."""
