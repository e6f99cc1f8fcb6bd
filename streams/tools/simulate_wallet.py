"""Simulated wallet traffic (the wallet seed): accounts, logins, charges, shop payments, P2P
transfers among friends, split bills and withdrawals, with named fraud patterns and outcomes
that arrive days later. Part of `Simulator.events()` when `SimConfig.wallet_payments` > 0.

Shape (per activity of a wallet user; users are the simulator's people, so a wallet account
and a BNPL buyer of one person resolve to one identity):
- charges from a bank account, a convenience store, an ATM, a card or a shop register, more
  around payday (the 25th, JST);
- payments at shops; P2P transfers inside friend groups; split bills (one friend pays the
  restaurant, the others send their share within hours); withdrawals to a bank or an ATM;
- most payments follow a login from the user's own device.

Legitimate look-alikes (a new phone before paying a friend, a club treasurer collecting fees
from many members, a first large transfer to a landlord, the wallet used as a bridge from the
bank to an ATM) keep the fraud patterns from being trivially separable.

Fraud patterns (the truth is the payment's `fraud_pattern`):
- `wallet_takeover`: failed logins and a login from a new device, then a transfer out;
- `mule_fan_in`: a fresh, barely verified account collects transfers from many scam victims
  within hours, then withdraws at an ATM;
- `card_cash_out`: a fresh account charges with a stolen card and withdraws it at once;
- `scam_transfer`: a user sends a large first transfer to someone new, talked into it.
Fraud payments are labelled FRAUD_CONFIRMED (a stolen-card charge: CHARGEBACK) 2–10 days
later; legitimate ones LEGIT_CONFIRMED once a week passed without a dispute (Outcome subject
PAYMENT).
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Any

from streams.tools.simulate_types import JST, OrderWorld, Person, SimEvent

WALLET_PATTERNS = ("wallet_takeover", "mule_fan_in", "card_cash_out", "scam_transfer")
CHARGE_CHANNELS = ("BANK_ACCOUNT", "CONVENIENCE_STORE", "ATM", "CARD", "SHOP_REGISTER")
CHARGE_WEIGHTS = (45, 20, 15, 15, 5)
MATURED_DAYS = 7  # a payment nobody disputed for a week is labelled legitimate


class WalletTraffic:
    """Builds the wallet events of one simulation (its own random stream: the orders of a
    seed stay what they were)."""

    def __init__(self, sim: OrderWorld) -> None:
        self.sim, self.cfg, self.jst, self.Event = sim, sim.cfg, JST, SimEvent
        self.rng = random.Random(sim.cfg.seed * 7919 + 1)
        n_users = max(12, min(len(sim.people), sim.cfg.wallet_payments // 6))
        self.users = self.rng.sample(sim.people, min(n_users, len(sim.people)))
        self.friends: dict[str, list[Person]] = {}
        shuffled = list(self.users)
        self.rng.shuffle(shuffled)
        i = 0
        while i < len(shuffled):
            size = self.rng.randint(3, 6)
            group = shuffled[i : i + size]
            for p in group:
                self.friends[p.person_id] = [f for f in group if f is not p]
            i += size
        self.events: list[SimEvent] = []
        self.verified: dict[str, datetime] = {}  # person id → when their account was verified

    # ------------------------------------------------------------ building blocks
    def stamp(self, when: datetime) -> str:
        return when.astimezone(self.jst).isoformat(timespec="milliseconds")

    def account(
        self, p: Person, when: datetime, kyc: str | None = None, age_days: float | None = None
    ) -> datetime:
        """Open and verify `p`'s wallet account (once per person): by default an account of
        any age (one in six under two weeks: new users are common) and KYC level."""
        if p.person_id in self.sim._wallets:
            return self.verified.get(p.person_id, when)
        self.sim._wallets.add(p.person_id)
        rng = self.rng
        if age_days is None:
            age_days = rng.uniform(0.2, 14) if rng.random() < 1 / 6 else rng.uniform(14, 1200)
        if kyc is None:
            kyc = rng.choices(["BASIC", "FULL"], [35, 65])[0]
        opened = when - timedelta(days=age_days)
        verified = opened + timedelta(hours=1)
        base = {"account_id": p.person_id}
        self.events.append(
            self.Event(
                "accounts", base | {"event_time": self.stamp(opened), "kind": "OPENED"}, opened
            )
        )
        kyc_event = base | {
            "event_time": self.stamp(verified),
            "kind": "KYC_VERIFIED",
            "kyc_level": kyc,
            "person": self.sim._buyer(p, False),
        }
        self.events.append(self.Event("accounts", kyc_event, verified))
        self.verified[p.person_id] = verified
        return verified

    def ready(self, p: Person, when: datetime) -> datetime:
        """`when`, or just after `p`'s account was verified if that is later: activities are
        drawn in random time order, and nobody pays before their account exists."""
        return max(when, self.account(p, when) + timedelta(minutes=self.rng.uniform(5, 120)))

    def login(self, p: Person, when: datetime, device: str | None = None, ok: bool = True) -> None:
        value = {
            "login_id": self.sim._next_id("wl"),
            "account_id": p.person_id,
            "event_time": self.stamp(when),
            "method": "PASSWORD",
            "success": ok,
            "device_id": device or p.device_id,
            "ip": p.ip,
        }
        self.events.append(self.Event("logins", value, when))

    def pay(
        self,
        p: Person,
        kind: str,
        amount: int,
        when: datetime,
        *,
        to: Person | None = None,
        channel: str | None = None,
        merchant: str | None = None,
        device: str | None = None,
        pattern: str | None = None,
        label: str | None = None,
    ) -> str:
        payment_id = self.sim._next_id("wp")
        value = {
            "payment_id": payment_id,
            "account_id": p.person_id,
            "counterparty_account_id": to.person_id if to else None,
            "merchant_id": merchant,
            "event_time": self.stamp(when),
            "kind": kind,
            "amount": amount,
            "status": "SUCCEEDED",
            "channel": channel,
            "device_id": device or p.device_id,
            "ip": p.ip,
        }
        self.events.append(self.Event("payments", value, when, pattern))
        if label is None and pattern is None:
            label = "LEGIT_CONFIRMED"  # every payment is labelled: a skewed sample of labels
            # would skew the model's probabilities, and so its thresholds, towards fraud
        if label is not None:
            delay = (
                timedelta(days=MATURED_DAYS)
                if pattern is None
                else timedelta(days=self.rng.uniform(2, 10))
            )
            known = when + delay
            outcome = {
                "order_id": payment_id,
                "event_time": self.stamp(known),
                "kind": label,
                "source": "ISSUER",
                "note": None,
                "subject": "PAYMENT",
            }
            self.events.append(self.Event("outcomes", outcome, known))
        return payment_id

    def yen(self, low: int, high: int, step: int = 100) -> int:
        """Log-uniform between low and high, rounded to `step`."""
        value = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        return max(step, int(value) // step * step)

    def when(self, payday: bool = False) -> datetime:
        moment = self.sim._when()
        if payday and self.rng.random() < 0.4:  # charges cluster around payday (25th, JST)
            local = moment.astimezone(self.jst)
            for shift in range(0, 31):
                candidate = local - timedelta(days=shift)
                if candidate.day in (25, 26, 27) and candidate >= self.sim.start:
                    return candidate
        return moment

    def fresh_person(self) -> Person:
        return self.sim._person(30_000_000 + self.sim._seq + self.rng.randrange(1_000_000))

    # ------------------------------------------------------------ legitimate activity
    def legit(self) -> None:
        rng = self.rng
        p = rng.choice(self.users)
        kind = rng.choices(
            ["charge", "pay", "split", "p2p", "withdraw", "look-alike"], [30, 35, 15, 12, 8, 4]
        )[0]
        if kind == "look-alike":
            self.look_alike(p)
            return
        when = self.ready(p, self.when(payday=kind == "charge"))
        if rng.random() < 0.7:
            self.login(p, when - timedelta(minutes=rng.uniform(0.5, 20)))
        if kind == "charge":
            channel = rng.choices(CHARGE_CHANNELS, CHARGE_WEIGHTS)[0]
            self.pay(p, "CHARGE", self.yen(1_000, 50_000, 1_000), when, channel=channel)
        elif kind == "pay":
            merchant = rng.choice(self.sim.active_merchants)["merchant_id"]
            self.pay(p, "PAY", self.yen(300, 20_000, 10), when, merchant=merchant)
        elif kind == "withdraw":
            channel = rng.choice(["BANK", "ATM"])
            self.pay(p, "WITHDRAW", self.yen(3_000, 50_000, 1_000), when, channel=channel)
        else:
            friends = self.friends.get(p.person_id) or [rng.choice(self.users)]
            if kind == "p2p":
                to = rng.choice(friends)
                self.account(to, when)
                self.pay(p, "TRANSFER", self.yen(500, 10_000, 100), when, to=to)
            else:  # split bill: p pays the restaurant, friends send their share
                total = self.yen(3_000, 20_000, 100)
                merchant = rng.choice(self.sim.active_merchants)["merchant_id"]
                self.pay(p, "PAY", total, when, merchant=merchant)
                sharing = friends[: rng.randint(1, len(friends))]
                share = max(100, total // (len(sharing) + 1) // 10 * 10)
                for friend in sharing:
                    later = self.ready(friend, when + timedelta(minutes=rng.uniform(5, 300)))
                    self.pay(friend, "TRANSFER", share, later, to=p)

    def look_alike(self, p: Person) -> None:
        """Legitimate activity that looks like a fraud pattern: what keeps rules honest."""
        rng = self.rng
        when = self.ready(p, self.when())
        case = rng.choice(["new_phone", "treasurer", "rent", "charge_then_withdraw"])
        if case == "new_phone":  # a new phone, then paying a friend back
            phone = f"dev-{rng.getrandbits(48):012x}"
            self.login(p, when - timedelta(days=rng.uniform(2, 30)))
            self.login(p, when - timedelta(minutes=rng.uniform(2, 50)), phone)
            to = rng.choice(self.friends.get(p.person_id) or self.users)
            self.account(to, when)
            self.pay(p, "TRANSFER", self.yen(1_000, 30_000, 100), when, to=to, device=phone)
        elif case == "treasurer":  # a club's treasurer collects the fees of many members
            t = when
            for member in rng.sample(self.users, min(len(self.users), rng.randint(6, 12))):
                if member is p:
                    continue
                t = self.ready(member, t)
                self.pay(member, "TRANSFER", rng.choice([3_000, 5_000, 10_000]), t, to=p)
                t += timedelta(minutes=rng.uniform(5, 120))
        elif case == "rent":  # a deposit or rent to a landlord paid for the first time
            landlord = self.fresh_person()
            self.account(landlord, when, kyc="FULL", age_days=rng.uniform(30, 900))
            self.pay(p, "TRANSFER", self.yen(60_000, 250_000, 1_000), when, to=landlord)
        else:  # the wallet as a bridge: charged from the bank, withdrawn at an ATM
            amount = self.yen(10_000, 80_000, 1_000)
            self.pay(p, "CHARGE", amount, when, channel="BANK_ACCOUNT")
            later = when + timedelta(minutes=rng.uniform(3, 25))
            self.pay(p, "WITHDRAW", amount, later, channel="ATM")

    # ------------------------------------------------------------ fraud
    def fraud(self) -> None:
        rng = self.rng
        pattern = rng.choice(WALLET_PATTERNS)
        when = self.when()
        if pattern == "wallet_takeover":
            victim = rng.choice(self.users)
            when = self.ready(victim, when)
            self.login(victim, when - timedelta(days=rng.uniform(1, 20)))  # the victim, as usual
            attacker = f"dev-{rng.getrandbits(48):012x}"
            start = when - timedelta(minutes=rng.uniform(5, 40))
            for k in range(rng.randint(0, 4)):
                self.login(victim, start - timedelta(minutes=k + 1), attacker, ok=False)
            self.login(victim, start, attacker)
            mule = self.fresh_person()
            self.account(mule, when, kyc="BASIC", age_days=rng.uniform(1, 10))
            amount = self.yen(20_000, 100_000, 1_000)
            self.pay(
                victim,
                "TRANSFER",
                amount,
                when,
                to=mule,
                device=attacker,
                pattern=pattern,
                label="FRAUD_CONFIRMED",
            )
        elif pattern == "mule_fan_in":
            mule = self.fresh_person()
            self.account(mule, when, kyc="BASIC", age_days=rng.uniform(1, 5))
            t = when
            total = 0
            for victim in rng.sample(self.users, min(len(self.users), rng.randint(6, 10))):
                t = self.ready(victim, t)
                amount = self.yen(10_000, 50_000, 1_000)
                total += amount
                self.pay(
                    victim, "TRANSFER", amount, t, to=mule, pattern=pattern, label="FRAUD_CONFIRMED"
                )
                t += timedelta(minutes=rng.uniform(10, 90))
            self.pay(
                mule,
                "WITHDRAW",
                min(total, 100_000),
                t + timedelta(minutes=20),
                channel="ATM",
                pattern=pattern,
                label="FRAUD_CONFIRMED",
            )
        elif pattern == "card_cash_out":
            thief = self.fresh_person()
            self.account(thief, when, kyc="BASIC", age_days=rng.uniform(0.05, 3))
            amount = self.yen(30_000, 100_000, 1_000)
            self.pay(
                thief, "CHARGE", amount, when, channel="CARD", pattern=pattern, label="CHARGEBACK"
            )
            later = when + timedelta(minutes=rng.uniform(2, 15))
            self.pay(
                thief,
                "WITHDRAW",
                amount * 95 // 100 // 1000 * 1000,
                later,
                channel="ATM",
                pattern=pattern,
                label="FRAUD_CONFIRMED",
            )
        else:  # scam_transfer: a user talked into a large first transfer to someone new
            victim = rng.choice(self.users)
            when = self.ready(victim, when)
            self.login(victim, when - timedelta(minutes=rng.uniform(1, 30)))
            scammer = self.fresh_person()
            self.account(scammer, when, kyc="BASIC", age_days=rng.uniform(2, 30))
            amount = self.yen(100_000, 300_000, 10_000)
            self.pay(
                victim,
                "TRANSFER",
                amount,
                when,
                to=scammer,
                pattern=pattern,
                label="FRAUD_CONFIRMED",
            )

    def build(self) -> list[Any]:
        target = self.cfg.wallet_payments
        while sum(e.topic == "payments" for e in self.events) < target:
            if self.rng.random() < self.cfg.wallet_fraud_rate:
                self.fraud()
            else:
                self.legit()
        return self.events
