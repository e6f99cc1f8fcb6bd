"""The screening pipeline, one module per stage.

    orders ──> resolve_orders (intake.py)                          bad input ──> dlq
                 decode + validate (validate.py)
                 external attributes (attributes.py, normalize.py)
                 resolve identity (identity.py → Redis identity graph)
           ──> identified-orders   (Kafka hop: re-keyed by identity)
           ──> screen_orders (screen.py)
                 enrich with merchant attributes (enrich.py) <── merchants (merchants.py)
                 features + per-identity history and account in Redis (features.py, accounts.py)
                 score with the newest model (model.py) <── models (scorer.py)
                 decide by policy (decide.py, policy.py) <── policies (policies.py)
                 feature snapshot ──> Redis (snapshots.py)
           ──> decisions, traces (the decision's audit record)
    payments ──> watch_card_auths (devices.py): failed card auths per device ──> Redis
    payments, outcomes ──> route_settlements (exposure.py) ──> account-events
           ──> apply_settlements (exposure.py): the accounts screen.py reads
    outcomes ──> learn_outcomes (learn.py, one worker holds the lease)
                 join snapshot, learn ──> models (checkpoints, every worker loads them)
    payments, logins, outcomes, merchants ──> check_events (ingest.py); bad input ──> dlq

Stage functions are pure (no I/O) and tested alone; the agents and tasks in intake.py,
screen.py, learn.py, scorer.py, policies.py, exposure.py, devices.py, lag.py, ingest.py and
merchants.py do the Kafka and Redis I/O. Stages that share a key are function calls inside one
agent; the internal hops are where the key changes (identified-orders, account-events).
Reason codes come from one catalogue, reasons.py.
"""
