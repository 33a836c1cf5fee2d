"""The quotas policy's sentences in Korean and English (issue 19): admission refusals, delegated
limits, the GPU queue's reasons, the culler's warnings and stops, the home page's notices, and the
sentences the quotas store keeps (a stop's note, a queue's reason), said in the reader's language."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from i18n import Moment, Text, _, ngettext, translate
from quotas.culler import GpuIdleClock, Overrun, cull_decisions
from quotas.gpu_queue import Share, Waiting, decide
from quotas.limits import LimitError, parse_limit
from quotas.loader import parse_platform
from quotas.model import Image, QueuePolicy
from quotas.notices import server_notices
from quotas.policy import Limit, Request, admit
from quotas.quantity import QuantityError, month_name, parse_quantity
from quotas.schema import gpu_queue, runs
from quotas.store import QueueFull, Store

from .builders import A100_X1, CPU_SMALL, H100_X1, H100_X4, SNU, GiB, hold, usage, with_quota
from .test_culler import PLATFORM, server

NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
H, M = timedelta(hours=1), timedelta(minutes=1)
NOVEMBER = month_name(date(2026, 11, 1))  # as the store names the period: "November 2026" / "2026년 11월"
# words a Korean sentence keeps in Latin letters: units, GPU models, and the ids of the case
UNITS = {"GPU", "CPU", "GiB", "UTC", "H100", "A100"}
LATIN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


def nov(*holdings, gpu_hours=0):  # type: ignore[no-untyped-def]
    return dataclasses.replace(usage(*holdings, gpu_hours=gpu_hours), period_name=NOVEMBER)


def refusal(tenant, request, use, limits=()) -> Text:  # type: ignore[no-untyped-def]
    decision = admit(tenant, request, use, limits)
    assert not decision.allowed and isinstance(decision.reason, Text)
    return decision.reason


def culled(kind: str, servers, config, overruns=None, clocks=None, gpu_warned=None) -> Text:  # type: ignore[no-untyped-def]
    actions = cull_decisions(servers, config, NOW, overruns or {}, None, clocks, gpu_warned)
    (action,) = [a for a in actions if a.kind == kind]
    assert isinstance(action.reason, Text)
    return action.reason


def limit_problem(body: object) -> Text:
    with pytest.raises(LimitError) as refused:
        parse_limit(SNU, "user", "alice", body)
    (problem,) = refused.value.problems
    assert isinstance(problem, Text)
    return problem


def lab_overrun() -> Overrun:
    return Overrun("lab", "tenant", "lab", Decimal("1000.4"), Decimal(1000), NOVEMBER, date(2026, 12, 1), "kim")


# (id, the sentence (made with the platform config of tests/unit/test_culler.py), its exact English,
#  values the Korean must say too)
CASES: list[tuple[str, Callable[..., Text], str, tuple[str, ...]]] = [
    (
        "not-member",
        lambda cfg: refusal(SNU, Request("mallory", "", CPU_SMALL), nov()),
        "You (mallory) are not a member of tenant snu-ai, so you cannot start servers charged to it."
        " Ask a tenant admin (kim) to add you.",
        ("mallory", "snu-ai", "kim"),
    ),
    (
        "profile",
        lambda cfg: refusal(
            dataclasses.replace(SNU, admins=()), Request("alice", "", dataclasses.replace(A100_X1, id="v100-x1")), nov()
        ),
        "Profile v100-x1 (a100 x1) is not available to tenant snu-ai (it may use: cpu-small, h100-x1, h100-x4,"
        " a100-x1, a100-mig). Pick one of those, or ask a platform admin to allow it.",
        ("v100-x1", "a100 x1", "snu-ai", "cpu-small, h100-x1, h100-x4, a100-x1, a100-mig"),
    ),
    (
        "already-running",
        lambda cfg: refusal(SNU, Request("alice", "train", CPU_SMALL), nov(hold("alice", H100_X1, "train"))),
        "Server 'train' is already running. Stop it before starting it again.",
        ("'train'",),
    ),
    (
        "servers-per-user",
        lambda cfg: refusal(
            SNU, Request("alice", "b", CPU_SMALL), nov(hold("alice", CPU_SMALL), hold("alice", CPU_SMALL, "a"))
        ),
        "You already run 2 of the 2 servers each person may run in tenant snu-ai (default, a). Stop one of them"
        " or ask a tenant admin (kim) for more.",
        ("snu-ai", "a", "kim"),
    ),
    (
        "gpus",
        lambda cfg: refusal(SNU, Request("carol", "", H100_X1), nov(hold("alice", H100_X4), hold("bob", H100_X4))),
        "You asked for 1 H100 GPU (profile h100-x1); tenant snu-ai uses 8 of 8 H100 GPUs (alice: 4, bob: 4)."
        " Stop a server, pick a smaller profile, or ask a tenant admin (kim) for more.",
        ("h100-x1", "snu-ai", "alice: 4, bob: 4", "kim"),
    ),
    (
        "cpu",
        lambda cfg: refusal(with_quota(cpu=Decimal(39)), Request("bob", "", H100_X1), nov(hold("alice", H100_X4))),
        "You asked for 8 CPUs of CPU (profile h100-x1); tenant snu-ai uses 32 CPUs of 39 CPUs (alice: 32 CPUs)."
        " Stop a server, pick a smaller profile, or ask a tenant admin (kim) for more.",
        ("h100-x1", "snu-ai", "39", "alice: CPU 32개", "kim"),
    ),
    (
        "memory",
        lambda cfg: refusal(with_quota(memory=300 * GiB), Request("bob", "", H100_X1), nov(hold("alice", H100_X4))),
        "You asked for 64 GiB of memory (profile h100-x1); tenant snu-ai uses 256 GiB of 300 GiB (alice: 256 GiB)."
        " Stop a server, pick a smaller profile, or ask a tenant admin (kim) for more.",
        ("h100-x1", "snu-ai", "64 GiB", "256 GiB", "300 GiB", "alice: 256 GiB", "kim"),
    ),
    (
        "budget",
        lambda cfg: refusal(SNU, Request("alice", "", H100_X1), nov(gpu_hours=2000)),
        "Tenant snu-ai has used 2,000.0 of its 2,000.0 GPU-hours for November 2026. GPU servers can start again"
        " when the budget resets on 2026-12-01 (UTC); CPU-only profiles still work. Ask a tenant admin (kim) if"
        " you need more.",
        ("snu-ai", "2,000.0", "2026년 11월", "2026년 12월 1일", "kim"),
    ),
    (
        "user-limit-gpus",
        lambda cfg: refusal(
            SNU,
            Request("alice", "", H100_X4),
            nov(hold("alice", H100_X1, "a")),
            [Limit("snu-ai", "user", "alice", gpus={"H100": 2})],
        ),
        "You asked for 4 H100 GPUs (profile h100-x4). Tenant snu-ai's admins limit you (alice) to 2 H100 GPUs;"
        " you use 1 (alice: 1). Stop a server, pick a smaller profile, or ask a tenant admin (kim) to raise the"
        " limit.",
        ("h100-x4", "snu-ai", "alice", "kim"),
    ),
    (
        "group-limit-gpu-hours",
        lambda cfg: refusal(
            SNU,
            Request("alice", "", H100_X1, ("ml",)),
            dataclasses.replace(nov(), gpu_hours_of={("group", "ml"): Decimal(12)}),
            [Limit("snu-ai", "group", "ml", gpu_hours=Decimal(10))],
        ),
        "Tenant snu-ai's admins limit group ml to 10.0 GPU-hours for November 2026; its members use 12.0."
        " GPU servers can start again when the period resets on 2026-12-01 (UTC); CPU-only profiles still work."
        " Ask a tenant admin (kim) if you need more.",
        ("snu-ai", "ml", "10.0", "12.0", "2026년 11월", "kim"),
    ),
    (
        "limit-over-ceiling",
        lambda cfg: limit_problem({"gpus": {"H100": 9}}),
        "gpus.H100 9 exceeds tenant snu-ai's ceiling of 8 H100 GPUs",
        ("gpus.H100 9", "snu-ai", "8"),
    ),
    (
        "queue",
        lambda cfg: (
            decide({"lab": Share(2)}, [], [Waiting(("alice", ""), "lab", 1, 1), Waiting(("bob", ""), "lab", 4, 2)])
            .waiting[("bob", "")]
            .reason
        ),
        "waiting for 4 × GPU: tenant lab uses 1 of 2; you are 1st of 1",
        ("4 × GPU", "lab"),
    ),
    (
        "culled-idle",
        lambda cfg: culled("idle", [server(profile="h100-x1", idle=2 * H)], cfg),
        "Stopped alice's default server (tenant lab, profile h100-x1, 1 H100 GPU): idle for 2h, and GPU servers of"
        " tenant lab are stopped after 1h idle (the platform's setting for GPU servers). Start it again from the"
        " hub's home page when you need it; the files in your home are kept.",
        ("alice", "lab", "h100-x1", "2시간", "1시간"),
    ),
    (
        "over-budget-warning",
        lambda cfg: culled("over_budget_warn", [server(profile="h100-x1")], cfg, {"lab": [lab_overrun()]}),
        "GPU-hour budget used up: alice's default server (tenant lab, profile h100-x1, 1 H100 GPU) will be stopped"
        " at 14:15 UTC, 15m from now, because tenant lab has used 1,000.4 of its 1,000.0 GPU-hours for November"
        " 2026. Save your work now. GPU servers can start again when the budget resets on 2026-12-01 (UTC); ask a"
        " platform admin if the tenant needs more. CPU-only profiles still start.",
        ("alice", "lab", "h100-x1", "14:15", "15분", "1,000.4", "2026년 11월"),
    ),
    (
        "gpus-idle-stop",
        lambda cfg: culled(
            "idle_gpu",
            [dataclasses.replace(server(name="gpu", profile="h100-x4"), gpu_indices=("0", "1", "2", "3"))],
            cfg,
            clocks={("alice", "gpu"): GpuIdleClock(NOW - 3 * H, NOW - 24 * H)},
            gpu_warned={("alice", "gpu"): NOW - M},  # warned of a stop that is due
        ),
        "Stopped server alice/gpu (tenant lab, profile h100-x4, 4 H100 GPUs): every GPU it held [0, 1, 2, 3] was"
        " under 5% utilization from 11:00:00 UTC for 3h, and GPU servers whose GPUs stay under 5% for 2h are"
        " stopped (the platform's setting). Start it again from the hub's home page when you need a GPU, or use a"
        " CPU-only profile; the files in your home are kept.",
        ("alice/gpu", "lab", "h100-x4", "[0, 1, 2, 3]", "5%", "11:00:00 (UTC)", "3시간", "2시간"),
    ),
]


@pytest.fixture(scope="module")
def config(images: Mapping[str, Image]):  # type: ignore[no-untyped-def]
    return parse_platform(copy.deepcopy(PLATFORM), images)


def korean_only(korean: str, english: str, values: tuple[str, ...]) -> None:
    """``korean`` is another sentence than the English, says every value, and keeps in Latin letters
    only units, GPU models and the case's own ids (no English word left untranslated)."""
    assert korean != english
    for value in values:
        assert value in korean, (value, korean)
    ids = {w for v in values for w in LATIN.findall(v)}
    assert [w for w in LATIN.findall(korean) if w not in UNITS | ids] == [], korean


@pytest.mark.parametrize(("make", "english", "values"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_sentence_is_said_in_korean_and_its_english_is_unchanged(config, make, english, values) -> None:  # type: ignore[no-untyped-def]
    text = make(config)
    assert isinstance(text, Text)
    assert str(text) == english
    assert translate(text, "en") == english
    korean_only(translate(text, "ko"), english, values)


def test_a_quantity_error_is_said_in_korean() -> None:
    with pytest.raises(QuantityError) as bad:
        parse_quantity("8Gb")
    english = "'8Gb' has unit 'Gb', which Kubernetes does not know; did you mean 'Gi' (for example \"8Gi\")?"
    assert str(bad.value) == english
    korean = translate(bad.value.args[0], "ko")
    assert "'8Gb'" in korean and "'Gi'" in korean and "단위" in korean and "did you mean" not in korean


def test_the_home_pages_notices_are_said_in_korean(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/quotas.sqlite")
    try:
        assert store.reserve(SNU, Request("alice", "", H100_X1), NOW - H)[0].allowed
        note = _("its GPUs were borrowed and their owner needed them back")
        assert store.mark_preempted(("alice", ""), NOW + 2 * M, note)
        (notice,) = server_notices(store.runs_of("alice", NOW - H), NOW)
        english = (
            "Your default server will be stopped at 14:02:00 UTC (in 2m): its GPUs were borrowed and their owner"
            " needed them back. Save your work now; you can start it again when GPUs are free."
        )
        assert str(notice.text) == english
        korean = translate(notice.text, "ko")
        assert "14:02:00 (UTC)" in korean and "2분" in korean and "빌려 쓴 GPU" in korean
        korean_only(korean, english, ())
    finally:
        store.close()


def test_a_stop_note_is_kept_in_both_languages_and_old_plain_notes_still_read(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/quotas.sqlite")
    try:
        for user in ("alice", "bob"):
            assert store.reserve(SNU, Request(user, "", H100_X1), NOW - H)[0].allowed
        # the culler's note of idle GPUs, with a sentence, a plural, a time and plain values inside
        note = _(
            "its GPUs ({gpus}{which}) have been under {threshold} utilization since {since}; {keep}",
            gpus=ngettext("{count} {gpu} GPU", "{count} {gpu} GPUs", 1, gpu="H100"),
            which=" [0]",
            threshold="5%",
            since=Moment(NOW - 3 * H, "time"),
            keep=_(
                "to keep it, run work on its GPUs, or, if you do not need a GPU now, start a CPU-only profile instead"
            ),
        )
        assert store.mark_to_stop(("alice", ""), NOW + 30 * M, note)
        assert store.mark_to_stop(("bob", ""), NOW + 30 * M, "a note kept before issue 19")
        with store.engine.connect() as conn:
            kept = dict(conn.execute(select(runs.c.user, runs.c.stop_note)).all())
        assert kept["alice"].startswith('{"aidc-text":') and kept["bob"] == "a note kept before issue 19"

        reread = Store(f"sqlite:///{tmp_path}/quotas.sqlite")  # another process: the hub's page, the API
        try:
            (alice,) = reread.runs_of("alice", NOW)
            (bob,) = reread.runs_of("bob", NOW)
        finally:
            reread.close()
        assert isinstance(alice.stop_note, Text) and alice.stop_note == note
        assert str(alice.stop_note) == (
            "its GPUs (1 H100 GPU [0]) have been under 5% utilization since 11:00:00 UTC; to keep it, run work on its"
            " GPUs, or, if you do not need a GPU now, start a CPU-only profile instead"
        )
        korean = translate(alice.stop_note, "ko")
        assert "H100 GPU 1개 [0]" in korean and "11:00:00 (UTC)" in korean and "CPU 전용 프로필" in korean
        korean_only(korean, str(note), ("[0]", "5%"))
        assert bob.stop_note == "a note kept before issue 19" and not isinstance(bob.stop_note, Text)
        assert translate(bob.stop_note, "ko") == "a note kept before issue 19"
    finally:
        store.close()


def test_a_queue_reason_is_kept_in_both_languages(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/quotas.sqlite")
    try:
        tenant = dataclasses.replace(SNU, queue=QueuePolicy(max_length=1))
        store.enqueue(tenant, "alice", "", H100_X4, True, NOW)
        plan = decide({"snu-ai": Share(8)}, [], [Waiting(("alice", ""), "snu-ai", 12, 1)], gpu_type="H100")
        position = plan.waiting[("alice", "")]
        store.place({("alice", ""): (position.position, position.length, position.reason)})
        with store.engine.connect() as conn:
            assert conn.execute(select(gpu_queue.c.reason)).scalar_one().startswith('{"aidc-text":')
        (waiting,) = store.queued()
        assert isinstance(waiting.reason, Text)
        assert waiting.reason == "waiting for 12 × H100: tenant snu-ai uses 0 of 8; you are 1st of 1"
        korean = translate(waiting.reason, "ko")
        assert (
            korean
            == "12 × H100 대기 중: 테넌트 snu-ai은(는) 할당량 8개 중 0개를 사용 중입니다. 대기 순서는 1건 중 1번째입니다"
        )

        with pytest.raises(QueueFull) as full:  # a refusal of the store, for people
            store.enqueue(tenant, "bob", "", H100_X1, True, NOW)
        english = (
            "Tenant snu-ai's GPU queue is full: 1 requests wait already (at most 1). Try again later, pick a"
            " smaller profile, or ask a tenant admin."
        )
        assert str(full.value) == english
        korean_only(translate(full.value.args[0], "ko"), english, ("snu-ai",))
    finally:
        store.close()
