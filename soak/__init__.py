"""`make soak`: two workers on one database under mixed load and random faults, then invariants.

`stack` starts the processes (embedded PostgreSQL, two `chatbranch run` workers, the mock model
of `mock_llm`, a canary listener); `setup` mints tokens and plants prompt-injection probes;
`actors` and `conversation` are the load (CSMs, analysts, admins, snoops, probers); `faults`
kills workers and restarts the database; `journal` records what was acknowledged and received;
`checks` and `report` judge every invariant from the database and print the table.
"""
