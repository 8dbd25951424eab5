"""Evaluation: what the evaluator model is asked and how its reply becomes spans.

Owns the labels, the prompt template, the reply schema, reply parsing and repair, and span alignment
(quotes to exact character offsets). Pure: no store, no model calls (the engine makes the call). It
may import only `errors` and `files`.
"""
