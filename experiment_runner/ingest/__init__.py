"""Ingest: conversation files in, conversations in the store.

Owns the import formats (native parts, OpenAI chat, OTLP traces), their normalisation and content hashes, the
importer (check every file, then write in one transaction) and conversation listing. It may import
`store`, `errors` and `files`; nothing here calls a model.
"""
