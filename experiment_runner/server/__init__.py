"""The REST API (`serve`): the hosted experiments API's endpoints over the same core functions the CLI calls.

Owns the FastAPI app and its router, the request/response models, and background runs. Thin: each
route parses, calls one core function, formats. FastAPI and uvicorn are imported only here. It may
import every stage but `cli`.
"""
