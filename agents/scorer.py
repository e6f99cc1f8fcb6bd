"""The model every worker scores with: the newest checkpoint on the compacted `models` topic.

Every worker follows the whole topic (streams/follow.py) and swaps in a checkpoint as soon as
it arrives, so all workers score with the same version within moments of its publication and
scoring never waits for learning. Screening starts only after the first catch-up, so a
restarted worker scores with the newest model, not a cold one. A checkpoint that fails to load
(bad signature, unreadable) is rejected with a logged reason and counted; the previous model
stays in use. An older version than the current one is ignored.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from agents.credit import credit_band, shown_cohorts, unpaid_ratio
from agents.model import (
    MODEL_KEY,
    SWITCH_KEY,
    CheckpointError,
    ModelState,
    decode_checkpoint,
    decode_switch,
)
from streams.app import Runtime
from streams.follow import follow_in_app
from streams.metrics import (
    CREDIT_COHORT_LABELS,
    CREDIT_MODEL_AVERAGE_PRECISION,
    CREDIT_MODEL_LABELS,
    CREDIT_MODEL_ROC_AUC,
    CREDIT_MODEL_WARM,
    CREDIT_OUTCOMES,
    CREDIT_UNPAID_RATIO,
    MODEL_AVERAGE_PRECISION,
    MODEL_CHALLENGER_AVERAGE_PRECISION,
    MODEL_CHALLENGER_INFO,
    MODEL_CHALLENGER_LABELS,
    MODEL_CHALLENGER_ROC_AUC,
    MODEL_INFO,
    MODEL_LABELS,
    MODEL_LOAD_FAILURES,
    MODEL_LOG_LOSS,
    MODEL_PROMOTED_AT,
    MODEL_ROC_AUC,
    MODEL_ROLLED_BACK_AT,
    MODEL_RULES_ONLY,
    MODEL_WARM,
)
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Scorer:
    """The model in use, and the signed bytes it came from (the learner resumes from them)."""

    state: ModelState
    min_labels: int  # SHINSA_MODEL_MIN_LABELS: a model decides once it learned this many …
    min_positives: int  # … and this many frauds among them
    blob: bytes | None = None
    # the kill switch (`shinsa model off`): while on, no model decides, however warm
    switched_off: bool = False
    loaded: asyncio.Event = field(default_factory=asyncio.Event)  # the first catch-up done

    @classmethod
    def of(cls, settings: Settings) -> Scorer:
        """A cold scorer, until the models topic gives it a checkpoint."""
        return cls(
            ModelState(kind=settings.model_estimator),
            settings.model_min_labels,
            settings.model_min_positives,
        )

    @property
    def warm(self) -> bool:
        return not self.switched_off and self.state.warm(self.min_labels, self.min_positives)

    @property
    def credit_warm(self) -> bool:
        """The credit model has learned enough repayments (and enough unpaid ones) to judge."""
        credit = self.state.credit
        return (
            not self.switched_off
            and credit is not None
            and credit.warm(self.min_labels, self.min_positives)
        )

    def band(self, credit_score: float | None) -> str:
        return credit_band(credit_score, self.credit_warm)

    @property
    def warm_for_payments(self) -> bool:
        return not self.switched_off and self.state.warm_for_payments(
            self.min_labels, self.min_positives
        )

    def switch(self, blob: bytes | None, secret: bytes) -> None:
        """Apply the kill switch's newest message (a refused one changes nothing)."""
        try:
            state = decode_switch(blob, secret)
        except CheckpointError as exc:
            MODEL_LOAD_FAILURES.inc()
            log.error("model switch refused: %s", exc)
            return
        self.switched_off = state["rules_only"]
        MODEL_RULES_ONLY.set(1 if self.switched_off else 0)
        publish_model_metrics(self.state, self.warm)
        publish_credit_metrics(self.state, self.credit_warm)
        if self.switched_off:
            log.warning("model switched off by %s: the policy rules decide alone", state["by"])
        else:
            log.warning("model switched back on by %s", state["by"])

    def apply(self, blob: bytes | None, secret: bytes) -> bool:
        """Swap in a newer checkpoint; False (and the old model kept) if it is refused."""
        try:
            state = decode_checkpoint(blob, secret)
        except CheckpointError as exc:
            MODEL_LOAD_FAILURES.inc()
            log.error("model checkpoint rejected: %s; still scoring with %s", exc, self.state.name)
            return False
        if state.version <= self.state.version and self.blob is not None:
            return False
        self.state, self.blob = state, blob
        publish_model_metrics(state, self.warm)
        publish_credit_metrics(state, self.credit_warm)
        log.info("scoring with model %s (%d labels)", state.name, state.labels)
        return True


def publish_model_metrics(state: ModelState, warm: bool) -> None:
    MODEL_INFO.clear()
    MODEL_INFO.labels(state.name).set(1)
    MODEL_WARM.set(1 if warm else 0)
    MODEL_LABELS.set(state.labels)
    metrics = state.metrics()
    for gauge, key in (
        (MODEL_ROC_AUC, "roc_auc"),
        (MODEL_AVERAGE_PRECISION, "average_precision"),
        (MODEL_LOG_LOSS, "log_loss"),
    ):
        value = metrics[key]
        gauge.set(float("nan") if value is None else value)
    publish_challenger_metrics(state)


def publish_challenger_metrics(state: ModelState) -> None:
    MODEL_CHALLENGER_INFO.clear()
    MODEL_PROMOTED_AT.set(state.promotions[-1]["at"] if state.promotions else 0)
    MODEL_ROLLED_BACK_AT.set(state.rollbacks[-1]["at"] if state.rollbacks else 0)
    challenger = state.challenger
    if challenger is None:
        for gauge in (MODEL_CHALLENGER_ROC_AUC, MODEL_CHALLENGER_AVERAGE_PRECISION):
            gauge.set(float("nan"))
        MODEL_CHALLENGER_LABELS.set(0)
        return
    MODEL_CHALLENGER_INFO.labels(challenger.kind).set(1)
    MODEL_CHALLENGER_LABELS.set(challenger.labels)
    metrics = challenger.metrics()
    for gauge, key in (
        (MODEL_CHALLENGER_ROC_AUC, "roc_auc"),
        (MODEL_CHALLENGER_AVERAGE_PRECISION, "average_precision"),
    ):
        value = metrics[key]
        gauge.set(float("nan") if value is None else value)


def publish_credit_metrics(state: ModelState, warm: bool) -> None:
    """The credit model's progressive metrics and the repayment cohorts it has counted."""
    credit = state.credit
    CREDIT_MODEL_WARM.set(1 if warm else 0)
    CREDIT_MODEL_LABELS.set(credit.labels if credit else 0)
    metrics = credit.metrics() if credit else {}
    for gauge, key in (
        (CREDIT_MODEL_ROC_AUC, "roc_auc"),
        (CREDIT_MODEL_AVERAGE_PRECISION, "average_precision"),
    ):
        value = metrics.get(key)
        gauge.set(float("nan") if value is None else value)
    cohorts = credit.cohorts if credit else {}
    CREDIT_COHORT_LABELS.clear()
    for month, tally in shown_cohorts(cohorts).items():
        for outcome, count in zip(CREDIT_OUTCOMES, tally, strict=True):
            CREDIT_COHORT_LABELS.labels(month, outcome).set(count)
    ratio = unpaid_ratio(cohorts)
    CREDIT_UNPAID_RATIO.set(float("nan") if ratio is None else ratio)


def register(rt: Runtime) -> Scorer:
    """Follow the models topic in this worker's app; returns the scorer it keeps current."""
    scorer = Scorer.of(rt.settings)
    publish_model_metrics(scorer.state, False)

    def apply_messages(messages: list) -> None:
        for msg in messages:
            if msg.key == MODEL_KEY and msg.value is not None:
                scorer.apply(msg.value, rt.secret)
            elif msg.key == SWITCH_KEY:
                scorer.switch(msg.value, rt.secret)

    topic = rt.topics.models.get_topic_name()
    follow_in_app(
        rt.app, rt.settings.kafka_bootstrap, topic, apply_messages, scorer.loaded, "newest model"
    )
    return scorer
