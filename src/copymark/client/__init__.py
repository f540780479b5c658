"""The caller's side of a copymark API: the budgeted, retrying HTTP client (:mod:`.http`), the
resumable query store (:mod:`.store`), querying many inputs into it (:mod:`.queries`) and the
store's pairs laid out for training (:mod:`.pairs`). Used by extraction and by ownership
verification; never imports the server."""
