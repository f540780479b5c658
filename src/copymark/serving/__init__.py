"""The owner's side of the API: served models (:mod:`.models`), the FastAPI app, limits,
budgets, batching and metrics."""
