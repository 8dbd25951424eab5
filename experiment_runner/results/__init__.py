"""Results: what an experiment's stored rows say.

Owns the metrics (pure), the export document and its schema, the catalog (list, show, delete), the
comparison of two experiments, and gold-span scoring (`span_scores` is the P/R/F1 math, `gold` reads
the gold file and the experiment's spans). It may import `store`, `evaluation` (label names, span
types) and `errors`; never `engine`, `report`, `server` or `cli`.
"""
