"""Backends that run a model's float networks (:class:`qaft.runtime.codec.Networks`)."""
