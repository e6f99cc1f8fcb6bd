"""What the control streams keep current for the hot paths: the merchant table
(agents/merchants.py), the policies in force (agents/policies.py) and the model in use
(agents/scorer.py). The composition root (streams/tools/worker.py) registers the three and
hands them, together, to both hot paths (agents/screen.py, agents/wallet.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from agents.merchants import Merchants
from agents.normalize import postal_table
from agents.policies import Policies
from agents.scorer import Scorer


@dataclass(frozen=True, slots=True)
class Control:
    merchants: Merchants
    policies: Policies
    scorer: Scorer

    async def ready(self) -> None:
        """Screen only once merchants, the newest model and the policy are loaded."""
        await asyncio.to_thread(postal_table)  # Japan Post's table, read now, not in a batch
        await self.merchants.loaded.wait()
        await self.scorer.loaded.wait()
        await self.policies.loaded.wait()
