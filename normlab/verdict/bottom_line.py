"""The report's bottom line: a few plain sentences that answer the thread ("batch norm makes the contours
rounder: isn't input normalization already doing that?"), each chosen by the measured outcome of its claims.

``SENTENCES`` is the one table of which claims feed which sentence (the report's methods show it). A sentence
is made of clauses, one per ``Feed``: the feed reads the first of its claim keys the study has (``pick=
"first"``), or every one of them (``pick="each"``, counts listed by checkpoint), and words its clause by the
claims' outcome (all / mixed / none of the decided cases hold), carrying the count "k of n". A feed whose
claims are absent or undecided drops its clause; a sentence without a clause is left out. A feed may state
what the textbook story expects (``expect``): when every such clause of a sentence measured the opposite, the
sentence says the data contradict that story; when every one measured what it expects, nothing is added; in
between (a mixed outcome, or clauses that point opposite ways), that the story holds only in part. A clause
pointing the other way from the sentence's first one is joined with "but" (``Feed.contrast``)."""

from __future__ import annotations

import dataclasses

from normlab.verdict.core import (
    LR_RATIO,
    WORSE_RATIO,
    Claim,
)

OUTCOMES = ("all", "mixed", "none")
MAX_NAMED = 2  # a mixed clause names its exceptions when there are at most this many


@dataclasses.dataclass(frozen=True)
class Feed:
    """One clause of a sentence. ``keys``: the claim keys it reads, in order of preference; ``pick``:
    "first" (the first key the study has) or "each" (every key it has, its counts listed by checkpoint);
    ``text``: {outcome: clause}, with {count} ("k of n cases", or the counts by checkpoint), an outcome
    missing from it falling back to "any"; ``expect``: the outcome the textbook story predicts (None: the
    clause tests no story); ``then``: the wording after another clause (default: ``text``); ``contrast``:
    the wording after a clause that agrees with the story when this one contradicts it, or the reverse
    (default: "but " and ``text``)."""

    keys: tuple[str, ...]
    text: dict
    pick: str = "first"
    expect: str | None = None
    then: dict | None = None
    contrast: dict | None = None

    def wording(self, outcome: str, leads: bool = True, opposes: bool = False) -> str:
        """The clause for ``outcome``: as the sentence's first clause (``leads``), after another one, or after
        one that points the other way from it (``opposes``)."""
        if opposes and not leads:
            if self.contrast:
                return self.contrast.get(outcome, self.contrast.get("any", ""))
            return "but " + self.wording(outcome)
        words = self.text if leads or not self.then else self.then
        return words.get(outcome, words.get("any", ""))


@dataclasses.dataclass(frozen=True)
class Sentence:
    """A bottom-line sentence: its clauses (the first present one leads), the textbook story it tests, what
    it says when the data disagree (``contrary``) or agree only in part (``in_part``)."""

    name: str
    topic: str
    feeds: tuple[Feed, ...]
    story: str
    contrary: str
    in_part: str


def _x(v: float) -> str:
    return f"{v:g}x"


SENTENCES = (
    Sentence(
        "first_layer", "Does input normalization round the contours of the first layer's weights?",
        (Feed(("slide",), {
            "all": "Input normalization does round the contours of the first layer's weights W[1]: on the slide's "
                   "own model (no hidden layer), standardizing made them round in {count}",
            "mixed": "Input normalization rounds the contours of the first layer's weights W[1], but not always: "
                     "on the slide's own model (no hidden layer), standardizing made them round in {count}",
            "none": "Input normalization did not round the contours of the first layer's weights W[1]: on the "
                    "slide's own model (no hidden layer), standardizing made them round in {count}"},
            expect="all"),
         Feed(("lecture_slice_init", "lecture_slice_end"), {
             "any": "standardizing made the networks' layer-1 slice round in {count}"}, pick="each", expect="all",
             then={"any": "and the networks' layer-1 slice in {count}"},
             contrast={"any": "but the networks' layer-1 slice in {count}"})),
        story="normalized inputs give round contours in the W[1] directions (the slide)",
        contrary="contrary to the slide", in_part="so the slide's picture holds only in part"),
    Sentence(
        "deeper_layers", "Once the inputs are normalized, what is left for batch norm?",
        (Feed(("hidden_spread_matched", "hidden_spread_end", "hidden_spread_init"), {
            "all": "Input normalization does not reach the deeper layers: with standardized inputs, batch norm "
                   "evened out the scales of the inputs of layers 2 and up in {count}",
            "mixed": "Beyond layer 1, batch norm still had work to do: with standardized inputs, it evened out the "
                     "scales of the inputs of layers 2 and up in {count}",
            "none": "Beyond layer 1, batch norm found nothing to even out: with standardized inputs, it evened out "
                    "the scales of the inputs of layers 2 and up in {count}"},
            expect="all"),
         Feed(("hidden_slice_init", "hidden_slice_end"), {
             "any": "batch norm made the deeper layers' slices of J rounder in {count}"}, pick="each", expect="all",
             then={"any": "and it made their slices of J rounder in {count}"},
             contrast={"any": "but it made their slices of J rounder in {count}"})),
        story="batch norm rounds the deeper layers' contours once the inputs are normalized (the lecture)",
        contrary="contrary to the textbook story", in_part="so the textbook story holds only in part"),
    Sentence(
        "smoothness", "Are rounder contours a smoother landscape?",
        (Feed(("smoothness_beta_batchnorm_matched", "smoothness_beta_batchnorm_end"), {
            "all": "Batch norm also made the loss smoother along the gradient in {count}",
            "mixed": "Batch norm made the loss smoother along the gradient in only {count}",
            "none": "But batch norm did not make the loss smoother along the gradient ({count})"},
            pick="each", expect="all"),
         Feed(("gradient_spread_end",), {
             "any": "Batch norm evened out the gradient magnitudes across layers in {count}",
             "none": "Batch norm did not even out the gradient magnitudes across layers ({count})"}, expect="all",
             then={
             "any": "and it evened out the gradient magnitudes across layers in {count}",
             "none": "nor did it even out the gradient magnitudes across layers ({count})"},
             contrast={
             "any": "but it evened out the gradient magnitudes across layers in {count}",
             "none": "but it did not even out the gradient magnitudes across layers ({count})"})),
        story="batch norm makes the loss landscape smoother (Santurkar et al. 2018)",
        contrary="contrary to Santurkar et al. 2018",
        in_part="so Santurkar et al.'s smoother landscape shows only in part"),
    Sentence(
        "gains", "If the inputs are normalized, does batch norm bring only marginal gains?",
        (Feed(("learning_rate",), {
            "any": f"With standardized inputs, batch norm raised the largest stable learning rate {_x(LR_RATIO)} "
                   "or more in {count}"}, expect="all"),
         Feed(("outcome_best_lr",), {
             "all": "With standardized inputs, training without batch norm ended clearly worse (final loss "
                    f"{_x(WORSE_RATIO)} or more) in {{count}}",
             "mixed": "With standardized inputs, training without batch norm ended clearly worse (final loss "
                      f"{_x(WORSE_RATIO)} or more) in only {{count}}",
             "none": "With standardized inputs, training without batch norm never ended clearly worse ({count}): the "
                     "gains in final loss were marginal"},
             then={
             "all": f"and training without it ended clearly worse (final loss {_x(WORSE_RATIO)} or more) in {{count}}",
             "mixed": f"but training without it ended clearly worse (final loss {_x(WORSE_RATIO)} or more) in only "
                      "{count}",
             "none": "but training without it never ended clearly worse ({count}): the gains in final loss were "
                     "marginal"})),
        story="batch norm permits larger learning rates (Bjorck et al. 2018)",
        contrary="contrary to the textbook story", in_part="so the textbook story holds only in part"),
    Sentence(
        "converse", "Can batch norm replace input normalization?",
        (Feed(("converse_outcome_none", "converse_outcome_batchnorm"), {
            "all": "Batch norm does not replace input normalization: raw inputs with batch norm trained clearly "
                   f"worse (final loss {_x(WORSE_RATIO)} or more) than standardized inputs in {{count}}",
            "mixed": "Batch norm does not reliably replace input normalization: raw inputs with batch norm trained "
                     f"clearly worse (final loss {_x(WORSE_RATIO)} or more) than standardized inputs in {{count}}",
            "none": "Batch norm could stand in for input normalization here: raw inputs with batch norm trained "
                    f"clearly worse (final loss {_x(WORSE_RATIO)} or more) than standardized inputs in {{count}}"},
            expect="none"),
         Feed(("input_bn_outcome",), {
             "all": "batch norm on the raw inputs themselves matched standardizing them in {count}",
             "mixed": "batch norm on the raw inputs themselves matched standardizing them in only {count}",
             "none": "batch norm on the raw inputs themselves never matched standardizing them ({count})"},
             expect="all")),
        story="batch norm can standardize the raw inputs instead of a preprocessing step (the thread's quote)",
        contrary="contrary to the thread's quote that it can",
        in_part="so the thread's quote that it can holds only in part"),
)

# how a clause names a claim's comparison (the slide is at initialization by definition: no phrase)
WHEN = {"init": "at initialization", "early": "early in training", "matched": "at matched loss",
        "end": "after training"}
NO_WHEN = ("slide",)


def _unit(claim: Claim) -> str:
    return "datasets" if claim.cases and all(c.depth is None for c in claim.cases) else "cases"


def count_text(claim: Claim, named: bool = True) -> str:
    """'k of n <unit>', naming the exceptions of a mixed outcome when there are few (``MAX_NAMED``), each
    with its reason when the claim gives one (``Claim.reasons``)."""
    text = f"{claim.n_holds} of {claim.n_cases} {_unit(claim)}"
    if named and claim.outcome == "mixed":
        failing = claim.failing_cases()
        if len(failing) <= MAX_NAMED:
            names = [f"{f}, {claim.reasons[f]}" if f in claim.reasons else f for f in failing]
            text += f" (not in {('; ' if any(f in claim.reasons for f in failing) else ', ').join(names)})"
    return text


def _phase(claim: Claim) -> str:
    return "" if claim.key in NO_WHEN else WHEN.get(claim.comparison, "")


def _decided(claims: dict[str, Claim], keys: tuple[str, ...]) -> list[Claim]:
    return [claims[k] for k in keys if k in claims and claims[k].outcome != "missing"]


def feed_claims(feed: Feed, claims: dict[str, Claim]) -> list[Claim]:
    """The claims a feed reads: the first decided one of its keys, or every decided one (``pick="each"``)."""
    found = _decided(claims, feed.keys)
    return found[:1] if feed.pick == "first" else found


def combined_outcome(found: list[Claim]) -> str:
    """all / none when every claim read is; else mixed ("missing" when none was read)."""
    outcomes = {c.outcome for c in found}
    if not outcomes:
        return "missing"
    return outcomes.pop() if len(outcomes) == 1 and outcomes <= {"all", "none"} else "mixed"


def clause(feed: Feed, found: list[Claim], leads: bool = True, opposes: bool = False) -> str:
    """The feed's clause for the claims it read: its wording for their outcome (``Feed.wording``: ``leads``,
    ``opposes``), with the count "k of n cases <checkpoint>" (one claim: its exceptions named when few) or the
    counts by checkpoint."""
    def at(c: Claim) -> str:
        return f" {_phase(c)}" if _phase(c) else ""

    items = [f"{c.n_holds} of {c.n_cases}{at(c)}" for c in found]
    first = found[0]
    items[0] = f"{first.n_holds} of {first.n_cases} {_unit(first)}{at(first)}"
    if len(found) == 1:
        items[0] += count_text(first)[len(count_text(first, named=False)):]  # its exceptions, if named
    count = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return feed.wording(combined_outcome(found), leads, opposes).format(count=count)


def agreement(feed: Feed, outcome: str) -> str:
    """How a feed's outcome stands to the textbook story: "agrees", "in part" (mixed), "contrary" or ""
    (no story, or nothing measured)."""
    if feed.expect is None or outcome not in OUTCOMES:
        return ""
    if outcome == feed.expect:
        return "agrees"
    return "in part" if outcome == "mixed" else "contrary"


def opposite(a: str, b: str) -> bool:
    """Whether two clauses' agreements (``agreement``) point opposite ways: one agrees with the story, the
    other contradicts it."""
    return {a, b} == {"agrees", "contrary"}


def sentence_verdict(stands: list[str]) -> str:
    """A sentence's agreement with its story from its clauses' (``agreement``; "" for a clause without a
    story): "contrary" when every clause with a story contradicts it, "agrees" when every one agrees, "in part"
    otherwise, "" when no clause tests the story."""
    tested = {a for a in stands if a}
    if not tested:
        return ""
    return tested.pop() if len(tested) == 1 and tested <= {"agrees", "contrary"} else "in part"


def sentence_text(s: Sentence, claims: dict[str, Claim]) -> tuple[str, list[Claim], str] | None:
    """(text, the claims it read, its agreement with the story) or None when none of its claims was decided."""
    clauses, read, stands = [], [], []
    for feed in s.feeds:
        found = feed_claims(feed, claims)
        if not found:
            continue
        stand = agreement(feed, combined_outcome(found))
        clauses.append(clause(feed, found, leads=not clauses, opposes=bool(stands) and opposite(stands[0], stand)))
        read += found
        stands.append(stand)
    if not clauses:
        return None
    text = clauses[0] + "".join((", " if c.split(" ", 1)[0] in ("and", "but", "nor") else "; ") + c
                                for c in clauses[1:])
    text = text[0].upper() + text[1:]
    verdict = sentence_verdict(stands)
    if verdict == "contrary":
        text += f" \N{EM DASH} {s.contrary}"
    elif verdict == "in part":
        text += f" \N{EM DASH} {s.in_part}"
    return text + ".", read, verdict


def bottom_line(by_question: dict[str, list[Claim]]) -> list[dict]:
    """The bottom line: [{"text", "anchor" (the question section of its leading claim), "name", "claims"
    (keys read), "agreement"}], in ``SENTENCES`` order; a single sentence saying so when no claim decides any."""
    claims = {c.key: c for cs in by_question.values() for c in cs}
    section = {c.key: q for q, cs in by_question.items() for c in cs}
    out = []
    for s in SENTENCES:
        made = sentence_text(s, claims)
        if made is None:
            continue
        text, read, verdict = made
        out.append({"text": text, "anchor": section[read[0].key], "name": s.name,
                    "claims": [c.key for c in read], "agreement": verdict})
    if not out:
        out.append({"text": "No claim of this study decided any case, so the data do not answer the thread yet: "
                            "see the sections below for what was measured.",
                    "anchor": next(iter(by_question), "methods"), "name": "nothing", "claims": [], "agreement": ""})
    return out


def feeds_table() -> list[dict]:
    """SENTENCES as rows for the report's methods: sentence, topic, the claims each clause reads (and how),
    the outcome the story expects, and the story."""
    rows = []
    for s in SENTENCES:
        for i, f in enumerate(s.feeds):
            rows.append({"sentence": s.name, "topic": s.topic, "clause": i + 1, "keys": list(f.keys),
                         "pick": ("every one present" if f.pick == "each" else "the first present"),
                         "expect": f.expect or "", "story": s.story})
    return rows


__all__ = ["SENTENCES", "Feed", "Sentence", "bottom_line", "count_text", "feeds_table"]
