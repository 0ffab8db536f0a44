"""Reloading the rules file: on change, on request, and a bad file keeps the rules in force."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from detector.engine.rules import RuleSet
from detector.worker.metrics import WorkerMetrics
from detector.worker.rules_file import RulesError
from detector.worker.rules_reload import RulesReloader

MUTE_A = '[[rule]]\ndevice = "a"\nmute = true\n'
MUTE_B = '[[rule]]\ndevice = "b"\nmute = true\n'
BAD = '[[rule]]\ndevice = "a"\nthreshold = 7\n'


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, text: str, mtime_ns: int) -> None:
    """Write and set the modification time (file systems tick coarsely: a rewrite within the
    same tick would otherwise look unchanged)."""
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "rules.toml"
    write(path, MUTE_A, 1_000_000_000)
    registry = CollectorRegistry()
    applied: list[RuleSet] = []
    clock = Clock()
    reloader = RulesReloader(
        path, applied.append, metrics=WorkerMetrics(registry), check_interval_s=5.0, clock=clock
    )
    return path, reloader, applied, clock, registry


def muted(rules: RuleSet, device: str) -> bool:
    return rules.policy(device, "m").mute


def test_first_load_and_a_change_seen_at_the_next_check(setup) -> None:  # type: ignore[no-untyped-def]
    path, reloader, applied, clock, registry = setup
    assert muted(reloader.load(), "a")
    assert registry.get_sample_value("iotad_rules") == 1
    write(path, MUTE_B + MUTE_A, 3_000_000_000)
    clock.now = 1.0
    assert not reloader.poll() and applied == []  # not yet: at most every 5 s
    clock.now = 6.0
    assert reloader.poll()
    assert muted(applied[-1], "a") and muted(applied[-1], "b")
    assert registry.get_sample_value("iotad_rules") == 2
    assert registry.get_sample_value("iotad_rules_reloads_total") >= 1


def test_a_touch_without_a_change_reloads_nothing(setup) -> None:  # type: ignore[no-untyped-def]
    path, reloader, applied, clock, registry = setup
    reloader.load()
    os.utime(path, ns=(5_000_000_000, 5_000_000_000))
    clock.now = 10.0
    assert not reloader.poll() and applied == []
    assert registry.get_sample_value("iotad_rules_reloads_total") == 0


def test_a_bad_file_keeps_the_rules_counts_once_and_logs_each_problem(
    setup, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    path, reloader, applied, clock, registry = setup
    reloader.load()
    write(path, BAD, 2_000_000_000)
    clock.now = 10.0
    assert not reloader.poll()
    assert applied == [] and muted(reloader.rules, "a")
    assert registry.get_sample_value("iotad_rules_reload_failures_total") == 1
    assert registry.get_sample_value("iotad_rules_stale") == 1
    assert any("threshold: must be a number in (0, 1]" in r.message for r in caplog.records)
    # Still bad at the next checks: not counted again, not logged again.
    caplog.clear()
    clock.now = 20.0
    assert not reloader.poll()
    assert registry.get_sample_value("iotad_rules_reload_failures_total") == 1
    assert caplog.records == []
    # Asked for explicitly (SIGHUP): tried, refused, counted again.
    reloader.request()
    assert not reloader.poll()
    assert registry.get_sample_value("iotad_rules_reload_failures_total") == 2
    # Fixed: taken at the next check.
    write(path, MUTE_B, 3_000_000_000)
    clock.now = 30.0
    assert reloader.poll() and muted(applied[-1], "b") and not muted(applied[-1], "a")
    assert registry.get_sample_value("iotad_rules_stale") == 0


def test_a_deleted_file_keeps_the_rules(setup) -> None:  # type: ignore[no-untyped-def]
    path, reloader, applied, clock, registry = setup
    reloader.load()
    path.unlink()
    clock.now = 10.0
    assert not reloader.poll()
    clock.now = 20.0
    assert not reloader.poll()
    assert registry.get_sample_value("iotad_rules_reload_failures_total") == 1
    assert muted(reloader.rules, "a") and applied == []


def test_request_reloads_before_the_interval(setup) -> None:  # type: ignore[no-untyped-def]
    path, reloader, applied, _clock, _registry = setup
    reloader.load()
    write(path, MUTE_B, 2_000_000_000)
    reloader.request()
    assert reloader.poll()  # clock still at 0
    assert muted(applied[-1], "b")


def test_a_bad_file_at_start_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(BAD)
    with pytest.raises(RulesError) as info:
        RulesReloader(path).load()
    assert info.value.lines == [
        f"{path}:3: rule 1: threshold: must be a number in (0, 1] (an anomaly score), got 7"
    ]


class ConfigMapVolume:
    """A directory laid out as the kubelet lays out a ConfigMap volume, and updated the way
    it updates one: the keys are links through ``..data`` to a timestamped directory; an
    update writes a new directory, points a new link ``..data_tmp`` at it, renames that over
    ``..data`` (atomic) and removes the old directory. The key's own link never changes."""

    def __init__(self, root: Path, key: str) -> None:
        self.root, self.key, self.version = root, key, 0
        self.root.mkdir()

    def publish(self, text: str, mtime_ns: int) -> None:
        self.version += 1
        new = self.root / f"..2026_11_30_17_00_{self.version:02d}.{self.version}"
        new.mkdir()
        write(new / self.key, text, mtime_ns)
        data = self.root / "..data"
        old = data.resolve() if data.is_symlink() else None
        (self.root / "..data_tmp").symlink_to(new.name)
        os.replace(self.root / "..data_tmp", data)
        if not (self.root / self.key).is_symlink():
            (self.root / self.key).symlink_to(f"..data/{self.key}")
        if old is not None:
            (old / self.key).unlink()
            old.rmdir()


def test_a_configmap_update_through_the_kubelet_links_is_seen(tmp_path: Path) -> None:
    """The path stays a link whose target is swapped underneath: the check follows it. Same
    size and modification time as the old file (the kubelet may write both within one tick):
    the new file's inode tells it apart, its content decides."""
    volume = ConfigMapVolume(tmp_path / "rules", "rules.toml")
    volume.publish(MUTE_A, 1_000_000_000)
    path = volume.root / "rules.toml"
    applied: list[RuleSet] = []
    clock = Clock()
    reloader = RulesReloader(path, applied.append, check_interval_s=5.0, clock=clock)
    assert muted(reloader.load(), "a")
    assert len(MUTE_A) == len(MUTE_B)

    volume.publish(MUTE_B, 1_000_000_000)
    clock.now = 6.0
    assert reloader.poll()
    assert muted(applied[-1], "b") and not muted(applied[-1], "a")
    # A second update (the first version's directory is gone, its inode free for reuse).
    volume.publish(MUTE_A, 1_000_000_000)
    clock.now = 12.0
    assert reloader.poll() and muted(applied[-1], "a")
    # A resync that rewrites the same content: looked at, not applied again.
    volume.publish(MUTE_A, 1_000_000_000)
    clock.now = 18.0
    assert not reloader.poll() and len(applied) == 2


def test_settings_keep_the_link_not_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolving IOTAD_RULES__PATH at start would pin the kubelet's first timestamped
    directory, which the next update deletes."""
    from detector.config.settings import load_settings

    volume = ConfigMapVolume(tmp_path / "rules", "rules.toml")
    volume.publish(MUTE_A, 1_000_000_000)
    path = volume.root / "rules.toml"
    monkeypatch.setenv("IOTAD_RULES__PATH", str(path))
    settings = load_settings(env_file=None, secrets_dir=tmp_path, require_model=False)
    assert settings.rules.path == path
    assert settings.rules.path.is_symlink()
