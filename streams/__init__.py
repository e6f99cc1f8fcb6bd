"""Shinsa's runtime plumbing (the Faust app, topics, records, codec, settings, the transactional
loop, metrics, delivery); tools/ holds the tools people run (the CLI, the local stack, the
worker's composition root, the simulator, the backtest). Nothing here but tools/ imports the
stages in agents/."""
