"""Stage 5: the online fraud model (River), its progressive validation and its checkpoints.

`ModelState` is what the one learner owns and every scorer loads: a River pipeline plus what
it has learned from (labels, positives), its progressive-validation window and its version.
Pure logic, no Kafka or Redis: agents/learn.py feeds it labels, agents/scorer.py scores with
the newest checkpoint, `shinsa eval` replays a history through the same class.

Estimators (chosen by `shinsa eval` on simulated traffic; figures in README):
- `logreg` (default): one-hot zeros filled in, standard scaling, logistic regression. Fast
  (tens of µs to score and to learn), calibrated probabilities, and each feature's
  contribution to the score is exact (weight × scaled value), so decisions can name their
  strongest reasons.
- `tree`: a Hoeffding adaptive tree; `forest`: a 10-tree adaptive random forest. Kept for the
  comparison; their contributions are not linear, so their decisions carry no MODEL: reasons.

Progressive validation: each label is scored with the score the model gave *before* the label
was known (the score in the decision's snapshot), never with the model that learned from it.
ROC AUC, average precision and log loss are computed over the most recent `window` labels, so
a falling AUC shows a model getting worse now, not diluted by months of history.

Checkpoints are signed: HMAC-SHA256 (SHINSA_HASH_KEY) over a JSON header and the pickled
model. Unpickling runs code, so an unsigned or tampered checkpoint is refused before it is
read, with a clear reason, and the previous model stays in use.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import pickle
import struct
import time
import weakref
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from river import base, forest, linear_model, optim, preprocessing, tree

from agents.wallet_features import PAYMENT_FEATURE

KIND_PREFIX = "payment_kind="  # the one-hot naming a payment's kind (agents/wallet_features.py)

MAGIC = b"SHM1"
ESTIMATORS = ("logreg", "tree", "forest")
PROBA_EPS = 1e-7
# 0.05 / (t + 1) ** 0.25 at the t-th label: 0.01 around the 600th (as quick as the constant
# 0.01 it replaces while labels are few), 0.0028 at 100,000, steadier as labels pile up;
# measured on the card benchmark's design against constant rates 0.01 / 0.005 / 0.002 / 0.001
# (README, "Model quality")
LEARNING_RATE = optim.schedulers.InverseScaling(0.05, power=0.25)
# The credit model's: a slow constant. Repayment behaviour drifts slowly and its labels are
# few and late (unpaid after 30+ days); measured on simulated credit (four files, README
# "Credit quality") against 0.0002 … 0.1 and five schedules: 0.001 best (mean 2nd-half ROC AUC
# 0.853, against 0.831 at the fraud model's rate)
CREDIT_LEARNING_RATE = 0.001
# ... and it starts from a prior unpaid share, not from 0.5: at its slow rate the intercept
# would take a thousand labels to come down, and a warm model would review every deferred
# order meanwhile. Same ROC AUC on those files, log loss over all orders 0.24 → 0.22.
CREDIT_PRIOR_UNPAID = 0.05


class FillOneHot(base.Transformer):
    """Give every one-hot feature seen so far a 0 when an order lacks it.

    An order carries only the one-hot values it has (`category=FOOD`: 1). A running scaler
    would then only ever see 1s, find no variance and scale the feature to 0, so the model would
    never learn category, tier, method, phone or email class. With the zeros filled in, each
    one-hot feature is scaled like any other (values never seen yet are added as they come).
    """

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def learn_one(self, x: dict[str, float]) -> None:
        self.seen.update(k for k in x if "=" in k)

    def transform_one(self, x: dict[str, float]) -> dict[str, float]:
        return dict.fromkeys(self.seen, 0.0) | x


@dataclass(slots=True)
class Folded:
    """A logistic pipeline (one-hot filler → scaler → regression) as one linear form of the
    raw features. The pipeline computes b + Σ w·(x − mean)/std over the order's features and
    every one-hot seen (filled with 0); that is base + Σ over the order's own features of
    slope·x − shift: a dict lookup a feature instead of three River steps (~45 µs an order
    less, measured), the same score up to rounding."""

    base: float  # intercept, with the filled one-hots' (0 − mean)/std terms
    slope: dict[str, float]  # w / std
    shift: dict[str, float]  # w · mean / std: a feature's term is slope·x − shift
    filled: frozenset[str]  # one-hots the filler fills: their − shift is already in base

    def logit(self, x: Mapping[str, float]) -> float:
        total, slope, shift, filled = self.base, self.slope, self.shift, self.filled
        for name, value in x.items():
            s = slope.get(name)
            if s is not None:
                total += s * value if name in filled else s * value - shift[name]
        return total

    def strongest(self, x: Mapping[str, float], top: int = 3) -> list[tuple[str, float]]:
        """The order's own features that raise its logit most (w·scaled > 0.05): "not FOOD" is
        no reason to name for a TICKETS order."""
        slope, shift = self.slope, self.shift
        parts = []
        for name, value in x.items():
            s = slope.get(name)
            if s is not None:
                part = s * value - shift[name]
                if part > 0.05:
                    parts.append((name, part))
        parts.sort(key=lambda p: -p[1])
        return parts[:top]


def fold(estimator: Any) -> Folded:
    """`estimator` (build_estimator("logreg")) as its Folded linear form, as it stands now."""
    filler, scaler = estimator["FillOneHot"], estimator["StandardScaler"]
    regression = estimator["LogisticRegression"]
    weights = regression.weights
    slope, shift = {}, {}
    for name, var in scaler.vars.items():
        std = var**0.5 if var else 0.0
        w = weights.get(name, 0.0)
        slope[name] = w / std if std else 0.0
        shift[name] = w * scaler.means[name] / std if std else 0.0
    base = regression.intercept - sum(shift.get(name, 0.0) for name in filler.seen)
    return Folded(base, slope, shift, frozenset(filler.seen))


def sigmoid(logit: float) -> float:
    """River's logistic link (utils.math.sigmoid), clipped the same way."""
    if logit < -30:
        return 0.0
    if logit > 30:
        return 1.0
    return 1 / (1 + math.exp(-logit))


_FOLDED: weakref.WeakKeyDictionary[Any, tuple[int, Folded]] = weakref.WeakKeyDictionary()


def build_estimator(
    kind: str = "logreg", learning_rate: Any = LEARNING_RATE, prior: float | None = None
) -> Any:
    """A fresh, untrained River pipeline of the given kind; `prior`: the share of positives
    a logistic model starts from (else 0.5)."""
    if kind == "logreg":
        start = math.log(prior / (1 - prior)) if prior is not None else 0.0
        return (
            FillOneHot()
            | preprocessing.StandardScaler()
            | linear_model.LogisticRegression(
                optimizer=optim.SGD(learning_rate), l2=1e-4, intercept_init=start
            )
        )
    if kind == "tree":
        return tree.HoeffdingAdaptiveTreeClassifier(grace_period=100, seed=1)
    if kind == "forest":
        return forest.ARFClassifier(n_models=10, seed=1)
    raise ValueError(f"unknown estimator {kind!r}; choose one of {', '.join(ESTIMATORS)}")


def credit_state(window: int = 10_000) -> ModelState:
    """A fresh credit model: logistic, at the credit learning rate."""
    estimator = build_estimator("logreg", CREDIT_LEARNING_RATE, CREDIT_PRIOR_UNPAID)
    return ModelState("logreg", estimator, window=window)


FRAUD_LABELS = {"FRAUD_CONFIRMED": 1, "CHARGEBACK": 1, "PAID": 0, "LEGIT_CONFIRMED": 0}
CREDIT_LABELS = {"UNPAID": 1, "PAID": 0}


def label_of(kind: str) -> int | None:
    """The fraud model's target: 1 for fraud (confirmed, a chargeback, a reviewer's verdict),
    0 for a good order (paid, or confirmed legitimate). UNPAID is no fraud label: a late payer
    is not a fraudster; it is the credit model's (`credit_label_of`)."""
    return FRAUD_LABELS.get(kind)


def credit_label_of(kind: str) -> int | None:
    """The credit model's target (deferred orders): 1 unpaid, 0 paid; fraud is no credit label."""
    return CREDIT_LABELS.get(kind)


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Exact ROC AUC (ties count half); None without both classes."""
    pos = sum(labels)
    neg = len(labels) - pos
    if not pos or not neg:
        return None
    pairs = sorted(zip(scores, labels, strict=True))
    rank_sum = 0.0
    i = 0
    while i < len(pairs):  # average ranks over ties
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + j + 1) / 2  # 1-based ranks i+1 .. j
        rank_sum += avg_rank * sum(label for _, label in pairs[i:j])
        i = j
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def average_precision(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Average precision (area under the precision-recall steps, as scikit-learn defines it)."""
    pos = sum(labels)
    if not pos:
        return None
    pairs = sorted(zip(scores, labels, strict=True), key=lambda p: -p[0])
    ap = 0.0
    hits = 0
    i = 0
    while i < len(pairs):  # a group of tied scores is one threshold
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        group_hits = sum(label for _, label in pairs[i:j])
        hits += group_hits
        ap += (hits / j) * (group_hits / pos)
        i = j
    return ap


def log_loss(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    if not labels:
        return None
    total = 0.0
    for p, y in zip(scores, labels, strict=True):
        p = min(max(p, PROBA_EPS), 1 - PROBA_EPS)
        total -= math.log(p) if y else math.log(1 - p)
    return total / len(labels)


def recall_at_review_rate(scores: Sequence[float], labels: Sequence[int], rate: float) -> float:
    """Share of the positives caught when the top `rate` of orders by score are reviewed."""
    pos = sum(labels)
    if not pos:
        return 0.0
    k = max(1, round(len(scores) * rate))
    top = sorted(zip(scores, labels, strict=True), key=lambda p: -p[0])[:k]
    return sum(label for _, label in top) / pos


@dataclass
class ModelState:
    """The model with everything a scorer and the learner need to know about it."""

    kind: str = "logreg"
    estimator: Any = None
    version: int = 0
    labels: int = 0
    positives: int = 0
    window: int = 10_000
    recent: deque[tuple[float, int]] = field(default_factory=deque)
    features: set[str] = field(default_factory=set)
    updated_at: float = 0.0
    # where the learner stands in the outcomes topic, and labels still waiting for snapshots
    offsets: dict[int, int] = field(default_factory=dict)
    pending: dict[str, Any] = field(default_factory=dict)
    # wallet payments learned (their features carry PAYMENT_FEATURE): the orders' labels do
    # not make the model competent on payments (0 in checkpoints written before)
    payment_labels: int = 0
    payment_positives: int = 0
    # one estimator per wallet payment kind (CHARGE, PAY, TRANSFER, WITHDRAW): measured better
    # than one shared with the orders (README, wallet backtest); orders use `estimator`
    payment_estimators: dict[str, Any] = field(default_factory=dict)
    # champion / challenger: a second model learning from the same labels, scored in shadow
    # (never deciding) until `shinsa model promote` swaps the two; each promotion is recorded
    challenger: ModelState | None = None
    promotions: list[dict[str, Any]] = field(default_factory=list)
    # the credit model (agents/credit.py): a logistic model of its own, learning repayments
    # (credit_label_of) of deferred orders from their credit features; made on first use
    credit: ModelState | None = None
    # credit labels by month of order: [paid, unpaid] (kept on the credit model)
    cohorts: dict[str, list[int]] = field(default_factory=dict)
    # `shinsa model rollback`: each return to an archived checkpoint, recorded like promotions
    rollbacks: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.estimator is None:
            self.estimator = build_estimator(self.kind)
        self.recent = deque(self.recent, maxlen=self.window)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Checkpoints written before payments had their own estimators (or before the
        challenger) load with none."""
        state.setdefault("payment_estimators", {})
        state.setdefault("challenger", None)
        state.setdefault("promotions", [])
        state.setdefault("credit", None)
        state.setdefault("cohorts", {})
        state.setdefault("rollbacks", [])
        self.__dict__.update(state)

    def estimator_for(self, x: Mapping[str, float]) -> Any:
        """The orders' estimator, or the one of the payment's kind (made on first use)."""
        if PAYMENT_FEATURE not in x:
            return self.estimator
        kind = next((k[len(KIND_PREFIX) :] for k in x if k.startswith(KIND_PREFIX)), "?")
        found = self.payment_estimators.get(kind)
        if found is None:
            found = self.payment_estimators[kind] = build_estimator(self.kind)
        return found

    # scoring ---------------------------------------------------------------------------------
    def score(self, x: Mapping[str, float]) -> float:
        """Fraud probability of one order's (or payment's) features."""
        if self.kind == "logreg":
            return sigmoid(self.folded(x).logit(x))
        proba = self.estimator_for(x).predict_proba_one(x)
        return float(proba.get(True, proba.get(1, 0.0)))

    def assess(
        self, x: Mapping[str, float], explain: bool
    ) -> tuple[float, list[tuple[str, float]]]:
        """The score and, if `explain`, its strongest contributions."""
        if self.kind != "logreg":
            return self.score(x), []
        folded = self.folded(x)
        score = sigmoid(folded.logit(x))
        return score, folded.strongest(x) if explain and self.labels else []

    def contributions(self, x: Mapping[str, float], top: int = 3) -> list[tuple[str, float]]:
        """The features that raise this score most (logit units), strongest first."""
        if self.kind != "logreg" or not self.labels:
            return []
        return self.folded(x).strongest(x, top)

    def folded(self, x: Mapping[str, float]) -> Folded:
        """The logistic pipeline that scores `x`, folded (re-folded after learning)."""
        estimator = self.estimator_for(x)
        cached = _FOLDED.get(estimator)
        if cached is None or cached[0] != self.labels:
            cached = _FOLDED[estimator] = (self.labels, fold(estimator))
        return cached[1]

    # learning --------------------------------------------------------------------------------
    def learn(self, x: Mapping[str, float], label: int, prior_score: float | None) -> None:
        """Learn one label; `prior_score` is the score given before the label was known."""
        if prior_score is not None:
            self.recent.append((prior_score, label))
        self.estimator_for(x).learn_one(dict(x), bool(label))
        self.labels += 1
        self.positives += label
        if PAYMENT_FEATURE in x:
            self.payment_labels += 1
            self.payment_positives += label
        self.features.update(x)
        self.updated_at = time.time()

    def metrics(self) -> dict[str, float | None]:
        scores = [s for s, _ in self.recent]
        labels = [y for _, y in self.recent]
        return {
            "roc_auc": roc_auc(scores, labels),
            "average_precision": average_precision(scores, labels),
            "log_loss": log_loss(scores, labels),
            "window_labels": float(len(labels)),
        }

    def warm(self, min_labels: int, min_positives: int) -> bool:
        """Enough labels of both kinds to be trusted with decisions."""
        return self.labels >= min_labels and self.positives >= min_positives

    def warm_for_payments(self, min_labels: int, min_positives: int) -> bool:
        """The same, counting wallet payments' labels only: a model that learned orders has
        not yet learned takeovers, mules or cash-outs, so the wallet rules decide till then."""
        return self.payment_labels >= min_labels and self.payment_positives >= min_positives

    @property
    def name(self) -> str:
        """The version as decisions report it."""
        return f"{self.kind}-v{self.version}"

    def shadow_score(self, x: Mapping[str, float]) -> float | None:
        """The challenger's score of these features, if there is a challenger."""
        return None if self.challenger is None else self.challenger.score(x)

    def learn_both(
        self,
        x: Mapping[str, float],
        label: int,
        prior_score: float | None,
        prior_challenger: float | None,
    ) -> None:
        """Learn one label in the champion and the challenger (each judged on its own score)."""
        self.learn(x, label, prior_score)
        if self.challenger is not None:
            self.challenger.learn(x, label, prior_challenger)

    def credit_model(self) -> ModelState:
        """The credit model (logistic, made on first use; kept across promotions)."""
        if self.credit is None:
            self.credit = credit_state(self.window)
        return self.credit

    def add_challenger(self, kind: str) -> None:
        """Start a challenger of this kind (it learns from the next label on)."""
        self.challenger = ModelState(kind=kind, window=self.window)

    def promote(self, at: float, by: str) -> dict[str, Any]:
        """Swap champion and challenger (the champion stays on as the challenger, so a
        promotion is undone by promoting again); returns the record kept in `promotions`."""
        if self.challenger is None:
            raise ValueError("no challenger to promote")
        old, new = self.challenger, ModelState.__new__(ModelState)
        new.__dict__.update(self.__dict__)  # the champion as it is, without the bookkeeping
        new.challenger, new.promotions, new.offsets, new.pending = None, [], {}, {}
        new.credit = None  # the credit model is not promoted: it stays where it is
        record = {
            "at": at,
            "by": by,
            "from": self.kind,
            "to": old.kind,
            "from_metrics": self.metrics(),
            "to_metrics": old.metrics(),
            "version": self.version + 1,
        }
        keep = {
            k: self.__dict__[k] for k in ("version", "offsets", "pending", "promotions", "credit")
        }
        self.__dict__.update(old.__dict__)
        self.__dict__.update(keep)
        self.challenger = new
        self.promotions = [*keep["promotions"], record]
        return record

    def roll_back(
        self, old: ModelState, at: float, by: str, credit: bool = False
    ) -> dict[str, Any]:
        """Decide and learn on with an archived checkpoint's fraud models (champion and
        challenger as they were), and its credit model too if `credit`; returns the record
        kept in `rollbacks`.

        The learner's place in the outcomes (offsets, waiting labels) and the record of changes
        stay as they are: the labels learned since that checkpoint are not learned again (they
        may be what went wrong), the next ones are."""
        record = {
            "at": at,
            "by": by,
            "from": self.version,
            "to": old.version,
            "from_labels": self.labels,
            "to_labels": old.labels,
            "version": self.version + 1,
            "credit": credit,
        }
        kept = ("version", "offsets", "pending", "promotions", "rollbacks")
        keep = {k: self.__dict__[k] for k in (*kept, *(() if credit else ("credit", "cohorts")))}
        self.__dict__.update(old.__dict__)
        self.__dict__.update(keep)
        self.rollbacks = [*keep["rollbacks"], record]
        return record

    def summary(self) -> dict[str, Any]:
        """What `shinsa model status` and the metrics show (no model internals, no PII)."""
        return {
            "version": self.name,
            "checkpoint": self.version,
            "kind": self.kind,
            "labels": self.labels,
            "positives": self.positives,
            "payment_labels": self.payment_labels,
            "features": len(self.features),
            "updated_at": self.updated_at,
            **self.metrics(),
            "challenger": self.challenger.challenger_summary() if self.challenger else None,
            "promotions": len(self.promotions),
            "promoted_at": self.promotions[-1]["at"] if self.promotions else None,
            "rollbacks": len(self.rollbacks),
            "rolled_back_to": self.rollbacks[-1]["to"] if self.rollbacks else None,
            "rolled_back_at": self.rollbacks[-1]["at"] if self.rollbacks else None,
            "credit": self.credit.challenger_summary() if self.credit else None,
        }

    def challenger_summary(self) -> dict[str, Any]:
        """A challenger's part of the summary: what it is and how it does."""
        return {
            "kind": self.kind,
            "labels": self.labels,
            "positives": self.positives,
            **self.metrics(),
        }


class CheckpointError(ValueError):
    """A checkpoint that must not be loaded; the message says why."""


def encode_checkpoint(state: ModelState, secret: bytes) -> bytes:
    """MAGIC, HMAC-SHA256, header length, JSON header (the summary), zlib'd pickled state."""
    header = orjson.dumps(state.summary())
    model = zlib.compress(pickle.dumps(state, protocol=5), 1)
    body = struct.pack(">I", len(header)) + header + model
    tag = hmac.new(secret, body, hashlib.sha256).digest()
    return MAGIC + tag + body


def verify_checkpoint(blob: bytes | None, secret: bytes) -> tuple[dict[str, Any], bytes]:
    """Check magic and signature; returns the summary header and the compressed model."""
    if not blob or not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 36:
        raise CheckpointError("not a Shinsa model checkpoint (bad magic or truncated)")
    tag, body = blob[len(MAGIC) : len(MAGIC) + 32], blob[len(MAGIC) + 32 :]
    expected = hmac.new(secret, body, hashlib.sha256).digest()
    if not hmac.compare_digest(tag, expected):
        raise CheckpointError(
            "signature does not match: written with another SHINSA_HASH_KEY, or tampered with"
        )
    (size,) = struct.unpack(">I", body[:4])
    return orjson.loads(body[4 : 4 + size]), body[4 + size :]


def decode_checkpoint(blob: bytes | None, secret: bytes) -> ModelState:
    """Verify and load a checkpoint, or raise CheckpointError saying what is wrong."""
    _header, model = verify_checkpoint(blob, secret)
    try:
        state = pickle.loads(zlib.decompress(model))
    except Exception as exc:  # a signed but unreadable model: another River version, say
        raise CheckpointError(f"model cannot be unpickled: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, ModelState):
        raise CheckpointError(f"checkpoint holds a {type(state).__name__}, not a ModelState")
    return state


# The compacted `models` topic holds, by key: the checkpoint every worker scores with
# (MODEL_KEY), the newest SHINSA_MODEL_HISTORY checkpoints under keys of their own (what
# `shinsa model history` lists and `shinsa model rollback` returns to; older ones are deleted
# with tombstones) and the kill switch (SWITCH_KEY), which needs no learner to take effect.
MODEL_KEY = b"model"
SWITCH_KEY = b"switch"
ARCHIVE_PREFIX = b"model@"
SWITCH_MAGIC = b"SHS1"


def archive_key(checkpoint: int) -> bytes:
    return ARCHIVE_PREFIX + str(checkpoint).encode()


def archived_checkpoint(key: bytes | None) -> int | None:
    """The checkpoint number of an archive key; None for any other key."""
    if not key or not key.startswith(ARCHIVE_PREFIX):
        return None
    number = key[len(ARCHIVE_PREFIX) :]
    return int(number) if number.isdigit() else None


def encode_switch(rules_only: bool, by: str, at: float, reason: str, secret: bytes) -> bytes:
    """The kill switch's message, signed like checkpoints: only a holder of SHINSA_HASH_KEY can
    take the model out of (or put it back into) the decisions."""
    body = orjson.dumps({"rules_only": rules_only, "by": by, "at": at, "reason": reason})
    return SWITCH_MAGIC + hmac.new(secret, body, hashlib.sha256).digest() + body


def decode_switch(blob: bytes | None, secret: bytes) -> dict[str, Any]:
    """The kill switch's state, or CheckpointError saying why the message is refused."""
    if not blob or not blob.startswith(SWITCH_MAGIC) or len(blob) < len(SWITCH_MAGIC) + 33:
        raise CheckpointError("not a Shinsa model switch (bad magic or truncated)")
    tag, body = blob[len(SWITCH_MAGIC) : len(SWITCH_MAGIC) + 32], blob[len(SWITCH_MAGIC) + 32 :]
    if not hmac.compare_digest(tag, hmac.new(secret, body, hashlib.sha256).digest()):
        raise CheckpointError("switch signature does not match: another SHINSA_HASH_KEY?")
    state = orjson.loads(body)
    if not isinstance(state, dict) or not isinstance(state.get("rules_only"), bool):
        raise CheckpointError("switch message holds no rules_only flag")
    return state
