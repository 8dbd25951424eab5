"""The store's schema revisions, in order: `r0001_initial` .. (each file's `revision` is its number)."""
