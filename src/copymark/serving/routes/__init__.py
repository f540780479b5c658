"""The API's routers, one module per endpoint family; :func:`copymark.serving.app.create_app`
includes the ones its model needs (``/v1/translate`` for image -> image models)."""
