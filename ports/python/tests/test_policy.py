"""The spare-server policy against SPEC.md §5.1 and the crash-loop brake against §7.7 / §13.6."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from prefork import policy  # noqa: E402
from prefork.slots import BUSY_WRITE, DEAD, GRACEFUL, READY, STARTING  # noqa: E402

L = policy.Limits(min_spare=5, max_spare=10, max_request_workers=64)


def board(idle=0, busy=0, graceful=0, size=64):
    s = [READY] * idle + [BUSY_WRITE] * busy + [GRACEFUL] * graceful
    return s + [DEAD] * (size - len(s))


class Ramp(unittest.TestCase):
    def test_the_spawn_ramp_is_1_2_4_8_16_32_32(self):
        p = policy.SparePolicy()
        spawned = []
        busy = 0
        for _ in range(8):
            d = p.tick(board(busy=busy), L)  # every new child is busy at once
            spawned.append(len(d.spawn))
            busy += len(d.spawn)
        self.assertEqual(spawned, [1, 2, 4, 8, 16, 32, 1, 0])  # then MRW 64 caps it

    def test_spawns_go_into_the_lowest_dead_slots(self):
        s = [BUSY_WRITE, DEAD, BUSY_WRITE, DEAD, DEAD] + [DEAD] * 59
        p = policy.SparePolicy(idle_spawn_rate=2)
        self.assertEqual(p.tick(s, L).spawn, [1, 3])

    def test_starting_children_count_as_idle(self):
        p = policy.SparePolicy()
        s = [STARTING] * 5 + [DEAD] * 59
        self.assertEqual(p.tick(s, L).spawn, [])
        self.assertEqual(p.idle_spawn_rate, 1)

    def test_one_retirement_candidate_list_highest_first_and_the_rate_resets(self):
        p = policy.SparePolicy(idle_spawn_rate=8)
        d = p.tick(board(idle=12), L)
        self.assertEqual(d.retire, list(range(11, -1, -1)))
        self.assertEqual((d.spawn, p.idle_spawn_rate), ([], 1))

    def test_max_request_workers_reached_is_logged_once_and_resets_the_rate(self):
        p = policy.SparePolicy(idle_spawn_rate=4)
        full = [BUSY_WRITE] * 64
        self.assertIn("AH00161", p.tick(full, L).log)
        self.assertEqual(p.idle_spawn_rate, 1)
        self.assertEqual(p.tick(full, L).log, "", "once per parent lifetime")

    def test_graceful_children_count_against_the_budget_and_are_not_idle(self):
        p = policy.SparePolicy(idle_spawn_rate=32)
        d = p.tick(board(graceful=62), L)
        self.assertEqual(d.spawn, [62, 63])

    def test_slots_above_max_request_workers_count_as_live(self):
        small = policy.Limits(min_spare=2, max_spare=4, max_request_workers=4)
        s = [DEAD] * 4 + [BUSY_WRITE] * 3  # old children above a lowered MRW (SPEC §5.3)
        p = policy.SparePolicy(idle_spawn_rate=4)
        self.assertEqual(p.tick(s, small).spawn, [0])

    def test_the_brake_holds_spawns_and_keeps_the_rate(self):
        p = policy.SparePolicy(idle_spawn_rate=4)
        d = p.tick(board(), L, spawning_allowed=False)
        self.assertEqual((d.spawn, p.idle_spawn_rate), ([], 4))

    def test_hold_off_after_a_graceful_restart_keeps_the_rate(self):
        p = policy.SparePolicy()
        p.on_graceful_restart()
        for _ in range(10):
            p.tick(board(busy=10), L)
        self.assertEqual(p.idle_spawn_rate, 1)
        p.tick(board(busy=10), L)
        self.assertEqual(p.idle_spawn_rate, 2)

    def test_ah00162_from_a_rate_of_8(self):
        p = policy.SparePolicy(idle_spawn_rate=8)
        self.assertIn("spawning 8 children, there are 0 idle, and 0 total children", p.tick(board(), L).log)


class Brake(unittest.TestCase):
    def test_third_early_exit_engages_then_doubles_to_64(self):
        b = policy.SpawnBrake()
        self.assertIsNone(b.early_exit(0.0))
        self.assertIsNone(b.early_exit(0.0))
        pauses = [b.early_exit(0.0) for _ in range(9)]
        self.assertEqual(pauses, [1, 2, 4, 8, 16, 32, 64, 64, 64])
        self.assertFalse(b.allows(63.9))
        self.assertTrue(b.allows(64.0))

    def test_five_at_once_pause_four_seconds(self):
        b = policy.SpawnBrake()
        for _ in range(5):
            b.early_exit(10.0)
        self.assertEqual(b.paused_until, 14.0)

    def test_a_healthy_child_resets_the_count(self):
        b = policy.SpawnBrake()
        b.early_exit(0.0)
        b.early_exit(0.0)
        b.healthy()
        self.assertIsNone(b.early_exit(0.0))

    def test_what_counts_as_early_and_healthy(self):
        self.assertTrue(policy.is_early(10.0, 9.0, READY))
        self.assertTrue(policy.is_early(100.0, 9.0, STARTING))
        self.assertFalse(policy.is_early(100.0, 9.0, READY))
        self.assertTrue(policy.is_healthy(12.0, 10.0, READY))
        self.assertFalse(policy.is_healthy(11.9, 10.0, READY))
        self.assertFalse(policy.is_healthy(20.0, 10.0, STARTING))

    def test_only_self_inflicted_deaths_count(self):
        self.assertTrue(policy.self_inflicted(1, None))
        self.assertTrue(policy.self_inflicted(None, 11))  # SIGSEGV
        self.assertFalse(policy.self_inflicted(0, None))
        for sig in (1, 9, 10, 15):
            self.assertFalse(policy.self_inflicted(None, sig))

    def test_fork_back_off_doubles_to_ten_seconds(self):
        b = policy.SpawnBrake()
        self.assertEqual([b.fork_failed(0.0) for _ in range(6)], [1, 2, 4, 8, 10, 10])


if __name__ == "__main__":
    unittest.main()


class Watchdog(unittest.TestCase):
    """SPEC §7.8's accept-lock rule."""

    def test_a_holder_without_progress_while_connections_wait_is_killed_at_the_limit(self):
        w = policy.LockWatchdog(limit=2.0)
        self.assertIsNone(w.look(10.0, holder=42, acquisitions=7, waiting=True))
        self.assertEqual(w.next_look(), 12.0)
        self.assertIsNone(w.look(11.9, holder=42, acquisitions=7, waiting=True))
        self.assertEqual(w.look(12.0, holder=42, acquisitions=7, waiting=True), 42)

    def test_progress_an_empty_queue_or_another_holder_starts_the_clock_again(self):
        w = policy.LockWatchdog(limit=2.0)
        w.look(0.0, 42, 7, True)
        self.assertIsNone(w.look(1.5, 42, 8, True))  # the count moved
        self.assertIsNone(w.look(3.0, 42, 8, True))
        self.assertIsNone(w.look(3.2, 42, 8, False))  # nothing waits: not watched
        self.assertIsNone(w.next_look())
        w.look(4.0, 42, 8, True)
        self.assertIsNone(w.look(5.0, 43, 8, True))  # another holder
        self.assertIsNone(w.look(6.5, 43, 8, True))
        self.assertEqual(w.look(7.0, 43, 8, True), 43)

    def test_a_limit_of_zero_turns_it_off(self):
        w = policy.LockWatchdog(limit=0)
        self.assertIsNone(w.look(0.0, 42, 7, True))
        self.assertIsNone(w.look(100.0, 42, 7, True))

    def test_the_activity_word_counts_acquisitions_and_every_pattern_decodes(self):
        word = policy.acquired(0)
        self.assertEqual(policy.activity(word), (True, 1))
        self.assertEqual(policy.activity(policy.released(word)), (False, 1))
        self.assertEqual(policy.activity(policy.acquired(0xFFFFFFFE)), (True, 0))  # wraps
        self.assertEqual(policy.activity(2**64 - 1), (True, 0x7FFFFFFF))
