"""The owner's side of the API.

:mod:`.models` (the served-model interface, image and label models, and the SPEC formats, with
:mod:`.classical`, :mod:`.entrypoints` and :mod:`.classifiers`), :mod:`.app` (the factory that
assembles :mod:`.routes`), :mod:`.deps` (auth, rate limit and budget as FastAPI dependencies),
:mod:`.uploads` (limits and decoding), :mod:`.answering`, :mod:`.execution` / :mod:`.worker`
(the supervised model worker), :mod:`.batcher`, :mod:`.limits`, :mod:`.metrics`,
:mod:`.server` (uvicorn). The API is documented in docs/API.md.
"""
