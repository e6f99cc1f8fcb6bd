"""The screening pipeline, one module per stage.

    orders ──> the hot path (streams/txloop.py: one Kafka transaction per batch)
                 decode + validate (validate.py), external attributes (attributes.py),
                 identity keys (identity.py, normalize.py)             intake.py
                 earlier decision of the order id? re-sent             state.py
                 resolve identity (identity.py → Redis identity graph)
                 velocity, account, device failures: one Redis read    state.py
                 screen_batch (screen.py): enrich (enrich.py) <── merchants (merchants.py),
                   features (features.py), score (model.py) <── models (scorer.py),
                   decide (decide.py, policy.py) <── policies (policies.py), trace, encode
                 state + snapshots + decisions: one Redis MULTI        state.py
           ──> decisions, traces (the decision's audit record); bad input ──> dlq
    payments (CHARGE, PAY, TRANSFER, WITHDRAW) ──> the "pay" loop (wallet.py): earlier
                 decision? re-sent; accounts, histories, logins: one Redis read (state.py);
                 screen_payments: features (wallet_features.py), score (model.py), decide
                 (wallet_rules.py) <── policies; histories, snapshots, decisions to Redis
           ──> decisions, traces (subject PAYMENT)
    accounts ──> watch_accounts (wallet.py): account facts; KYC person ──> identity graph
    logins ──> watch_logins (wallet.py): recent logins and devices per account
    payments ──> watch_card_auths (devices.py): failed card auths per device ──> Redis
    payments, outcomes ──> route_settlements (exposure.py) ──> account-events
           ──> apply_settlements (exposure.py): the accounts screen.py reads
    outcomes ──> learn_outcomes (learn.py, one worker holds the lease)
                 join snapshot, learn ──> models (checkpoints, every worker loads them)
    payments, accounts, logins, outcomes, merchants ──> check_events (ingest.py); bad input
           ──> dlq

Stage functions are pure (no I/O) and tested alone; the handlers of screen.py and wallet.py
and the agents and tasks of learn.py, scorer.py, policies.py, exposure.py, devices.py, lag.py,
ingest.py, merchants.py and wallet.py do the Kafka and Redis I/O, all Redis through state.py.
Each control module has a `register(rt)` that the composition root (streams/tools/worker.py)
calls with the runtime (settings, schema registry, Faust app, topics: streams/app.py); the
merchant table, the policies and the model it gets back are handed to both hot paths as one
`Control` (control.py). Reason codes come from one catalogue, reasons.py.
"""
