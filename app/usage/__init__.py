"""Token usage: the per-call ledger, prices and reports."""
