"""The tools people run: the `shinsa` CLI (one module per command group, in cli/), the local
stack, the worker's composition root, the simulator, the backtest, the demo, KPIs, reviews,
explanations and policy administration. The runtime plumbing they drive is `streams/`; the
pipeline's stages are `agents/`."""
