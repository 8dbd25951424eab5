"""Ingest: conversation files in, conversations in the store.

Owns the import formats (native parts, OpenAI chat), their normalisation and content hashes, the
importer (check every file, then write in one transaction) and conversation listing. It may import
`store`, `errors` and `files`; nothing here calls a model.
"""
