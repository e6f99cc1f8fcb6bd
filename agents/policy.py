"""Policies as data (個社対応 as configuration): a default and per-merchant overrides in YAML.

A policy file is validated against `PolicyDocument` before it is published (`shinsa policy
apply`); an error names the file's line and the field. The schema (every field optional; what
is left out keeps the default shown in agents/decide.py's `Policy`):

```yaml
name: spring-campaign            # letters, digits, . _ -; the version adds a content hash
default:                         # rules for every merchant
  review_score: 0.5              # score ≥ this → REVIEW (0–1; rules and model share the scale)
  decline_score: 0.9             # score ≥ this → DECLINE
  review_amount: 100000          # yen; above → REVIEW
  decline_amount: 500000         # yen; above → DECLINE
  deferred_cap: 55000            # yen; a DEFERRED (後払い) order above → DECLINE
  tier_review_amount: {HIGH_RISK: 20000, SMALL: 50000}
  identity_contacts_review: 3    # phones, emails or addresses of one identity → REVIEW
  allowed_methods: [DEFERRED, CARD, WALLET, BANK_TRANSFER, CONVENIENCE_STORE, CARRIER_BILLING]
  velocity_caps: {count_10m: 3, count_1h: 5, count_24h: 10, count_7d: 20, amount_24h: 200000}
  new_identity_max_amount: 30000 # a brand-new identity's first order above → REVIEW
  exposure_limit: 100000         # outstanding deferred balance per identity (支払い能力)
  credit_review_score: 0.5       # deferred: credit model's unpaid probability ≥ this → REVIEW
  credit_decline_score: 0.8      # ... ≥ this → DECLINE (CREDIT_SCORE; agents/credit.py)
merchants:                       # per-merchant overrides, field by field over `default`
  m0001: {review_score: 0.3, allowed_methods: [CARD]}
  m0002: {payments: {review_score: 0.4}}  # its wallet payments (PAY), over `payments:`
block:                           # decline; `overridable: false` even beats the allow list
  - {kind: phone, hash: 3f2a…, overridable: false, note: chargeback ring 2026-10}
  - {kind: identity, value: i42}
allow:                           # approve, unless a non-overridable block hits
  - {kind: email, hash: 9c41…}
payments:                        # wallet payments (agents/wallet_rules.py has the defaults)
  review_score: 0.5
  decline_score: 0.9
  kinds: {TRANSFER: {review_score: 0.4}}          # per-kind thresholds
  kyc_limits: {NONE: {TRANSFER: 10000, WITHDRAW: 0}, BASIC: {TRANSFER: 100000}}
  velocity_caps: {TRANSFER: {count_1h: 10, amount_24h: 500000}}
  fan_in_24h: 5                  # distinct senders into the receiver in 24 h → DECLINE
  failed_logins_review: 3        # failed logins in the hour before → REVIEW
  first_transfer_review_amount: 100000
  unknown_account_kyc: NONE      # limits of a payer no account event told us of yet
```

List entries never hold PII: phones, emails and devices are keyed hashes (HMAC with
SHINSA_HASH_KEY of the normalized value; `shinsa policy hash KIND VALUE` prints one), identity
ids are ids. Pure logic: parsing, validation, merging, matching; no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agents.decide import ListHits, Policy
from agents.normalize import normalize_email, normalize_phone
from agents.state import keyed_hash
from agents.wallet_rules import PaymentPolicy
from streams.records import Order

Tier = Literal["ENTERPRISE", "STANDARD", "SMALL", "HIGH_RISK"]
Method = Literal[
    "DEFERRED", "CARD", "WALLET", "BANK_TRANSFER", "CONVENIENCE_STORE", "CARRIER_BILLING"
]
ListKind = Literal["phone", "email", "device", "identity"]
HEX128 = re.compile(r"^[0-9a-f]{32}$")


class VelocityCaps(BaseModel):
    """Most earlier orders (or yen) an identity may have placed in a window before this one."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    count_10m: int | None = Field(None, ge=0)
    count_1h: int | None = Field(None, ge=0)
    count_24h: int | None = Field(None, ge=0)
    count_7d: int | None = Field(None, ge=0)
    amount_1h: int | None = Field(None, ge=0)
    amount_24h: int | None = Field(None, ge=0)
    amount_7d: int | None = Field(None, ge=0)


PaymentKind = Literal["CHARGE", "PAY", "TRANSFER", "WITHDRAW"]
KycLevel = Literal["NONE", "BASIC", "FULL"]


class KindThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    review_score: float | None = Field(None, ge=0, le=1)
    decline_score: float | None = Field(None, ge=0, le=1)


class PaymentVelocityCaps(BaseModel):
    """Most earlier payments of the kind (or yen) an account may have made in a window."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    count_1h: int | None = Field(None, ge=0)
    count_24h: int | None = Field(None, ge=0)
    amount_24h: int | None = Field(None, ge=0)


class PaymentRules(BaseModel):
    """Wallet payments (agents/wallet_rules.py); None means the default shown there."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    review_score: float | None = Field(None, ge=0, le=1)
    decline_score: float | None = Field(None, ge=0, le=1)
    kinds: dict[PaymentKind, KindThresholds] | None = None
    kyc_limits: dict[KycLevel, dict[PaymentKind, int]] | None = None
    velocity_caps: dict[PaymentKind, PaymentVelocityCaps] | None = None
    fan_in_24h: int | None = Field(None, ge=1)
    failed_logins_review: int | None = Field(None, ge=1)
    first_transfer_review_amount: int | None = Field(None, gt=0)
    unknown_account_kyc: KycLevel | None = None

    @model_validator(mode="after")
    def _limits_not_negative(self) -> PaymentRules:
        for level, limits in (self.kyc_limits or {}).items():
            for kind, yen in limits.items():
                if yen < 0:
                    raise ValueError(f"kyc_limits.{level}.{kind} must be >= 0 yen, got {yen}")
        return self


def payment_policy(name: str, *levels: PaymentRules | None) -> PaymentPolicy:
    """The wallet defaults with the file's `payments:` sections laid over them in order (the
    default's, then a merchant's): fields replaced, a KYC level's limits, per-kind thresholds
    and velocity caps merged key by key."""
    base = PaymentPolicy(name=name)
    kyc = {level: dict(limits) for level, limits in base.kyc_limits.items()}
    kinds: dict[str, dict[str, float]] = {}
    caps: dict[str, dict[str, int]] = {}
    set_fields: dict[str, Any] = {}
    for rules in levels:
        if rules is None:
            continue
        for level, limits in (rules.kyc_limits or {}).items():
            kyc.setdefault(level, {}).update(limits)
        for kind, values in (rules.kinds or {}).items():
            kinds.setdefault(kind, {}).update(values.model_dump(exclude_none=True))
        for kind, values in (rules.velocity_caps or {}).items():
            caps.setdefault(kind, {}).update(values.model_dump(exclude_none=True))
        set_fields |= rules.model_dump(exclude_none=True)
    set_fields["kinds"], set_fields["velocity_caps"] = kinds, caps
    return PaymentPolicy(
        name=name,
        review_score=set_fields.get("review_score", base.review_score),
        decline_score=set_fields.get("decline_score", base.decline_score),
        kinds=set_fields.get("kinds", {}),
        kyc_limits=kyc,
        velocity_caps=set_fields.get("velocity_caps", {}),
        fan_in_24h=set_fields.get("fan_in_24h", base.fan_in_24h),
        failed_logins_review=set_fields.get("failed_logins_review", base.failed_logins_review),
        first_transfer_review_amount=set_fields.get(
            "first_transfer_review_amount", base.first_transfer_review_amount
        ),
        unknown_account_kyc=set_fields.get("unknown_account_kyc", base.unknown_account_kyc),
    )


class CreditLimit(BaseModel):
    """Dynamic deferred-payment limits (agents/decide.py `credit_limit_of`), in yen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    first_order: int = Field(20_000, ge=0)  # an identity with no repayment history yet
    base: int = Field(30_000, ge=0)  # once it has one
    per_on_time: int = Field(10_000, ge=0)
    per_late: int = Field(-20_000, le=0)  # repaid after it was reported unpaid
    per_unpaid: int = Field(-50_000, le=0)
    max: int = Field(300_000, gt=0)


class Rules(BaseModel):
    """The rules of one policy level; None means 'as the level below'."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    review_score: float | None = Field(None, ge=0, le=1)
    decline_score: float | None = Field(None, ge=0, le=1)
    review_amount: int | None = Field(None, gt=0)
    decline_amount: int | None = Field(None, gt=0)
    deferred_cap: int | None = Field(None, gt=0)
    tier_review_amount: dict[Tier, int] | None = None
    identity_contacts_review: int | None = Field(None, ge=1)
    allowed_methods: list[Method] | None = Field(None, min_length=1)
    velocity_caps: VelocityCaps | None = None
    new_identity_max_amount: int | None = Field(None, gt=0)
    exposure_limit: int | None = Field(None, ge=0)
    credit_limit: CreditLimit | None = None  # replaces exposure_limit when set
    credit_review_score: float | None = Field(None, ge=0, le=1)
    credit_decline_score: float | None = Field(None, ge=0, le=1)
    payments: PaymentRules | None = None  # per merchant: its wallet payments (PAY)

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> Rules:
        for review, decline, prefix in (
            (self.review_score, self.decline_score, ""),
            (self.credit_review_score, self.credit_decline_score, "credit_"),
        ):
            if review is not None and decline is not None and review > decline:
                raise ValueError(f"{prefix}review_score must not be above {prefix}decline_score")
        return self


class ListEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ListKind
    hash: str | None = Field(None, description="keyed hash (phone, email, device)")
    value: str | None = Field(None, description="identity id (kind: identity)")
    overridable: bool = True
    note: str | None = None

    @model_validator(mode="after")
    def _key_fits_kind(self) -> ListEntry:
        if self.kind == "identity":
            if not self.value or self.hash:
                raise ValueError("an identity entry takes `value: <identity id>`, not a hash")
        elif not self.hash or self.value or not HEX128.match(self.hash):
            raise ValueError(
                f"a {self.kind} entry takes `hash:` (32 hex digits from `shinsa policy hash "
                f"{self.kind} VALUE`), never the {self.kind} itself"
            )
        return self

    @property
    def key(self) -> str:
        return self.value if self.kind == "identity" else self.hash  # type: ignore[return-value]


class PolicyDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    default: Rules = Rules()
    merchants: dict[str, Rules] = {}
    block: list[ListEntry] = []
    allow: list[ListEntry] = []
    payments: PaymentRules = PaymentRules()

    @model_validator(mode="after")
    def _effective_thresholds_in_order(self) -> PolicyDocument:
        wallets = {"payments": payment_policy(self.name, self.payments)}
        for merchant, rules in self.merchants.items():
            if rules.payments is not None:
                wallets[f"merchant {merchant} payments"] = payment_policy(
                    self.name, self.payments, rules.payments
                )
        for where, wallet in wallets.items():
            for kind in ("CHARGE", "PAY", "TRANSFER", "WITHDRAW"):
                review, decline = wallet.thresholds(kind)
                if review > decline:
                    raise ValueError(
                        f"{where} {kind}: review_score {review} is above decline_score {decline}"
                    )
        for merchant, rules in self.merchants.items():
            merged = merge(Policy(), self.default, rules)
            for prefix in ("", "credit_"):
                review = getattr(merged, f"{prefix}review_score")
                decline = getattr(merged, f"{prefix}decline_score")
                if review > decline:
                    raise ValueError(
                        f"merchant {merchant}: {prefix}review_score {review} is above "
                        f"{prefix}decline_score {decline} once merged with default"
                    )
        return self


class PolicyError(ValueError):
    """An invalid policy file; the message names the line and the field."""


def merge(base: Policy, *levels: Rules) -> Policy:
    """`base` with each level's set fields laid over it, in order."""
    values = {f.name: getattr(base, f.name) for f in fields(base)}
    for rules in levels:
        for name, value in rules.model_dump(exclude_none=True).items():
            if name == "payments":
                continue  # wallet rules: `merchant_payment_policy`
            if name == "allowed_methods":
                value = tuple(value)
            values[name] = value
    return Policy(**values)


@dataclass(frozen=True)
class PolicySet:
    """A validated policy document, ready to decide with."""

    document: PolicyDocument
    version: str
    default: Policy
    merchants: dict[str, Policy] = field(default_factory=dict)
    blocks: dict[tuple[str, str], ListEntry] = field(default_factory=dict)
    allows: dict[tuple[str, str], ListEntry] = field(default_factory=dict)
    payments: PaymentPolicy = field(default_factory=PaymentPolicy)
    merchant_payments: dict[str, PaymentPolicy] = field(default_factory=dict)

    def payments_for(self, merchant_id: str | None) -> PaymentPolicy:
        """The wallet rules of a payment at this merchant (PAY), or the default's."""
        return self.merchant_payments.get(merchant_id or "", self.payments)

    def for_merchant(self, merchant_id: str) -> Policy:
        return self.merchants.get(merchant_id, self.default)

    def canonical(self) -> dict[str, Any]:
        """The document as published on the policies topic (defaults left out)."""
        return self.document.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


def build_policy_set(document: PolicyDocument) -> PolicySet:
    body = json.dumps(
        document.model_dump(mode="json", exclude_none=True), sort_keys=True, ensure_ascii=False
    )
    version = f"{document.name}-{hashlib.sha256(body.encode()).hexdigest()[:8]}"
    default = merge(Policy(name=document.name), document.default)
    merchants = {
        mid: merge(Policy(name=document.name), document.default, rules)
        for mid, rules in document.merchants.items()
    }
    return PolicySet(
        document,
        version,
        default,
        merchants,
        {(e.kind, e.key): e for e in document.block},
        {(e.kind, e.key): e for e in document.allow},
        payment_policy(document.name, document.payments),
        {
            mid: payment_policy(document.name, document.payments, rules.payments)
            for mid, rules in document.merchants.items()
            if rules.payments is not None
        },
    )


DEFAULT_POLICY_SET = build_policy_set(PolicyDocument(name="default"))


def policy_from_json(data: Mapping[str, Any]) -> PolicySet:
    """A policy published on the topic (already validated once, validated again)."""
    return build_policy_set(PolicyDocument.model_validate(data))


# ------------------------------------------------------------------ YAML with line numbers


def line_of(node: yaml.Node | None, path: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at `path` (mapping keys / sequence indexes), or of the
    deepest node found on the way."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    node = value
                    line = key.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def load_yaml_document(
    text: str, source: str, error: type[ValueError], shape: str
) -> tuple[yaml.Node | None, dict[str, Any]]:
    """A YAML file's node tree (for line numbers) and its mapping; `error` names the line of
    invalid YAML, or says the document is not the mapping `shape` describes."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise error(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise error(f"{source}: {shape}")
    return root, data


def validation_problems(
    exc: ValidationError, root: yaml.Node | None, source: str, unknown: str
) -> str:
    """Every problem of a pydantic validation as `file:line: field: problem`, one a line."""
    problems = []
    for error in exc.errors():
        loc = tuple(p for p in error["loc"] if p not in ("function-after",))
        field_path = ".".join(str(p) for p in loc) or "(document)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = f"unknown field (a typo?); {unknown}"
        problems.append(f"{source}:{line_of(root, loc)}: {field_path}: {message}")
    return "\n".join(problems)


def load_policy_yaml(text: str, source: str = "policy") -> PolicySet:
    """Parse and validate a policy file; raise PolicyError naming every bad line and field."""
    root, data = load_yaml_document(
        text, source, PolicyError, "a policy is a mapping with at least `name:`"
    )
    try:
        return build_policy_set(PolicyDocument.model_validate(data))
    except ValidationError as exc:
        unknown = "see the schema in agents/policy.py"
        raise PolicyError(validation_problems(exc, root, source, unknown)) from None


def effective_yaml(policy: Policy) -> str:
    """The rules a merchant gets, as YAML (for `policy show` and diffs)."""
    values = {f.name: getattr(policy, f.name) for f in fields(policy) if f.name != "name"}
    if values.get("allowed_methods") is not None:
        values["allowed_methods"] = list(values["allowed_methods"])
    return yaml.safe_dump(values, sort_keys=True, allow_unicode=True)


# ------------------------------------------------------------------ block and allow lists


def list_hash(secret: bytes, kind: str, value: str) -> str | None:
    """The keyed hash a list entry of `kind` holds for a raw value (None: not usable)."""
    if kind == "phone":
        normalized = normalize_phone(value).e164
    elif kind == "email":
        normalized = normalize_email(value).address
    elif kind == "device":
        normalized = value.strip() or None
    else:
        raise ValueError(f"{kind!r} entries are not hashed")
    return keyed_hash(secret, f"list:{kind}", normalized) if normalized else None


def order_list_keys(order: Order, identity_id: str, secret: bytes) -> dict[str, str]:
    """Every list key of an order: keyed hashes of its phone, email and device; its identity."""
    keys = {"identity": identity_id}
    for kind, raw in (
        ("phone", order.buyer.phone),
        ("email", order.buyer.email),
        ("device", order.device_id),
    ):
        if raw:
            hashed = list_hash(secret, kind, raw)
            if hashed:
                keys[kind] = hashed
    return keys


def match_lists(policies: PolicySet, keys: Mapping[str, str]) -> ListHits:
    hard, soft, allow = [], [], []
    for kind, key in keys.items():
        entry = policies.blocks.get((kind, key))
        if entry is not None:
            (soft if entry.overridable else hard).append(kind)
        if (kind, key) in policies.allows:
            allow.append(kind)
    return ListHits(tuple(hard), tuple(allow), tuple(soft))
