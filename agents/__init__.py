"""The screening pipeline, one module per stage.

    orders ──> screen_orders (screen.py) ─────────────────────────────> decisions
                 │ decode + validate (validate.py)   bad input ────────> dlq
                 │ enrich with merchant attributes (enrich.py) <── merchants (merchants.py)
                 └ decide by policy (decide.py)
    payments, logins, outcomes ──> check_events (ingest.py): validated, counted; bad ──> dlq

Every stage function is pure (no I/O) and is tested alone; the agents in screen.py, ingest.py
and merchants.py do the Kafka I/O. Stages that share a key are function calls inside one agent;
a Kafka hop is added only where the key changes (identity resolution will re-key by identity).
Reason codes come from one catalogue, reasons.py.
"""
