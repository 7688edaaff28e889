"""Arms change what specialists read; lessons reach the next prompt; imported lessons name their source."""

from __future__ import annotations

import pytest

from mlflow_autoresearch import schema as S
from mlflow_autoresearch._errors import UsageError
from mlflow_autoresearch.lineage import InMemoryStore, MlflowStore
from mlflow_autoresearch.loop import run_loop
from mlflow_autoresearch.recipe import load_recipe
from mlflow_autoresearch.research import ARM_TAG, book_of, parse_arm
from mlflow_autoresearch.settings import make_settings
from mlflow_autoresearch.specialists import roster
from mlflow_autoresearch.specialists._prompting import first_turn, system_prompt
from tests.loop.scripted import ScriptedSpecialist


class Recording(ScriptedSpecialist):
    """The scripted specialist, keeping every context it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.contexts = []

    def propose(self, ctx):
        self.contexts.append(ctx)
        return super().propose(ctx)


def loop(recipe_dir, store, trials=5, **settings):
    spec = Recording()
    result = run_loop(load_recipe(recipe_dir), make_settings(trials=trials, in_process=True, proposals_ahead=0,
                                                             **settings),
                      store=store, specialist=spec, echo=lambda m: None)
    return spec, result


def test_a_lineage_off_specialist_reads_only_its_parent(toy_recipe):
    store = InMemoryStore()
    spec, _ = loop(toy_recipe, store, trials=6, arm="lineage-off")
    trials = store.trials()
    for ctx in spec.contexts[1:]:
        prompt = system_prompt(ctx) + first_turn(ctx)
        others = [t for t in trials if t.run_id != ctx.parent.run_id and t.number < len(trials) - 1]
        assert ctx.parent.short in prompt or ctx.parent.name in prompt
        for t in others:
            assert t.short not in prompt and t.hypothesis not in prompt, f"{t.short} leaked into the prompt"
        assert "lineage-off arm" in prompt
        assert [t.run_id for t in ctx.lineage.trials] == [ctx.parent.run_id]
        assert ctx.lineage.leaderboard() == ctx.lineage.render()  # every view is the same "hidden" note
    assert all(t.tags.get(ARM_TAG) == "lineage-off" for t in trials if t.decision != "baseline")


def test_the_default_arm_does_show_the_lineage(toy_recipe):
    spec, _ = loop(toy_recipe, InMemoryStore(), trials=4)
    last = spec.contexts[-1]
    earlier = [t for t in last.lineage.trials if t.run_id != last.parent.run_id and t.finished]
    assert earlier and any(t.short in first_turn(last) for t in earlier)


def test_generalist_and_generic_arms_change_the_roster(toy_recipe):
    recipe = load_recipe(toy_recipe)
    shipped = roster(recipe)
    [general] = parse_arm("generalist").roles(shipped)
    assert general.name == "generalist" and all(r.brief in general.brief for r in shipped)
    generic = parse_arm("generic:3").roles(shipped)
    assert [r.name for r in generic] == ["generic1", "generic2", "generic3"]
    assert len({r.brief for r in generic}) == 1 and all(r.brief not in generic[0].brief for r in shipped)
    assert parse_arm("generic:3").experiment("toy") == "toy-generic-3" and parse_arm(None).experiment("toy") == "toy"
    with pytest.raises(UsageError, match="--arm 'lineage-of'.*generic:N"):
        parse_arm("lineage-of")
    spec, _ = loop(toy_recipe, InMemoryStore(), trials=3, arm="generic:2")
    assert {c.role.name for c in spec.contexts} <= {"generic1", "generic2"}


def test_an_analysts_note_reaches_the_next_prompt_and_is_kept_on_the_experiment(toy_recipe, mlflow_store):
    spec, _ = loop(toy_recipe, mlflow_store, trials=6, lessons_every=2, tracking_uri=mlflow_store.tracking_uri)
    notes = book_of(mlflow_store).notes()
    assert [n.version for n in notes] == [1, 2, 3][: len(notes)] and len(notes) >= 2
    assert all(n.trials_seen >= 2 * n.version for n in notes)
    first = notes[0]
    assert "Lessons v1, from 2 trial(s)" in first.text and "tried" in first.text
    # Each note is its own run: shown in the UI (its description), never a trial of the lineage.
    run = mlflow_store.client.get_run(first.run_id)
    assert run.data.tags[S.KIND] == "lessons" and run.data.tags[S.NOTE] == first.text
    assert mlflow_store.read_artifact(first.run_id, "lessons/lessons.md") == first.text
    assert first.run_id not in {t.run_id for t in mlflow_store.trials()}
    later = [c for c in spec.contexts if c.lessons]
    assert later, "no proposal read a note"
    assert "Lessons v1" in later[0].lessons and later[0].lessons in first_turn(later[0])
    assert "Lessons so far" in first_turn(later[0])
    assert not spec.contexts[0].lessons


def test_imported_lessons_name_their_source(toy_recipe, sqlite_uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = MlflowStore("earlier", sqlite_uri)
    loop(toy_recipe, source, trials=4, lessons_every=2, tracking_uri=sqlite_uri)
    note = book_of(source).latest()
    kept = [t for t in source.trials() if t.decision == "keep"]
    assert note is not None and kept

    target = MlflowStore("later", sqlite_uri)
    spec, _ = loop(toy_recipe, target, trials=1, lessons_from=("earlier",), tracking_uri=sqlite_uri)
    text = spec.contexts[0].lessons
    assert "From experiment 'earlier'" in text
    assert f"lessons v{note.version} (run {note.run_id})" in text
    assert all(f"{t.short} (run {t.run_id}" in text for t in kept[:5])
    assert text in first_turn(spec.contexts[0])
    imported = book_of(target).latest(imported=True)
    assert imported is not None and f"earlier:lessons-v{note.version}:{note.run_id}" in imported.sources

    with pytest.raises(UsageError, match="--lessons-from 'nowhere'"):
        loop(toy_recipe, MlflowStore("third", sqlite_uri), trials=1, lessons_from=("nowhere",),
             tracking_uri=sqlite_uri)


def test_the_claude_analyst_writes_the_note_through_the_messages_api(toy_recipe):
    from mlflow_autoresearch.lineage import Lineage
    from mlflow_autoresearch.research._analyst import ClaudeAnalyst, analyst_for, facts_analyst
    from mlflow_autoresearch.specialists import make_specialist
    from mlflow_autoresearch.specialists._retry import RetryPolicy
    from tests.specialists.fake_messages_server import FakeMessagesServer, reply, text

    store = InMemoryStore()
    loop(toy_recipe, store, trials=3)
    recipe = load_recipe(toy_recipe)
    lineage = Lineage.load(store, recipe.metric.goal)
    said = "- t0001 raised SCORE and lost; t0002 crashed on purpose.\n- Lowering SCORE is the direction left."
    with FakeMessagesServer([reply(text(said), input_tokens=1000, output_tokens=100)]) as server:
        spec = make_specialist("claude", model="claude-sonnet-5-5", base_url=server.url, api_key="k", tracing=False,
                               retry=RetryPolicy(budget_seconds=5, base_seconds=0.1, max_seconds=0.2))
        analyst = analyst_for("claude", spec)
        assert isinstance(analyst, ClaudeAnalyst) and analyst_for("offline", None) is facts_analyst
        note, usage = analyst(lineage, recipe, 4)
        [request] = server.requests
    assert note.text == said and note.version == 4 and note.author == "claude:claude-sonnet-5-5"
    assert usage.calls == 1 and usage.cost_usd > 0
    user = request.messages[0]["content"]
    assert "Lessons v4" in user and "t0002" in user, "the model reads the counted facts and the lineage"
    assert "analyst" in request.json["system"]
