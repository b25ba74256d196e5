"""The slot protocol against SPEC.md §2.3's table and §3's operations."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from prefork import slots  # noqa: E402
from prefork.slots import (BUSY, BUSY_READ, BUSY_WRITE, CHILD, DEAD, GRACEFUL, IDLE_KILL,  # noqa: E402
                           KEEPALIVE, PARENT, READY, STARTING, Directive)

# SPEC §2.3, written out as the document has it (letters), not derived from the code.
SPEC_ROWS = [
    (PARENT, ".", "S"),
    (PARENT, "S_RWKLCGI", "."),
    (PARENT, "S_RWKLC", "G"),
    (PARENT, "_", "I"),
    (CHILD, "S", "_"),
    (CHILD, "_", "R"),
    (CHILD, "RWKLC", "_"),
    (CHILD, "RWKLC", "RWKLC"),
]
CODE = {letter: code for code, letter in slots.LETTERS.items()}


class TransitionTable(unittest.TestCase):
    def test_the_table_is_exactly_the_documented_one(self):
        documented = {(side, CODE[f], CODE[t]) for side, fs, ts in SPEC_ROWS for f in fs for t in ts}
        for side in (PARENT, CHILD):
            for f in slots.LETTERS:
                for t in slots.LETTERS:
                    self.assertEqual(slots.allowed(side, f, t), (side, f, t) in documented,
                                     f"{side} {slots.LETTERS[f]} -> {slots.LETTERS[t]}")

    def test_a_child_never_writes_dead_or_a_directive(self):
        for f in slots.LETTERS:
            for t in (DEAD, GRACEFUL, IDLE_KILL):
                self.assertFalse(slots.allowed(CHILD, f, t))


class Word(unittest.TestCase):
    def test_encoding_round_trips_and_unknown_states_are_corrupt(self):
        w = slots.encode(KEEPALIVE, 0xABCDEF, 7)
        self.assertEqual(w, 7 << 32 | 0xABCDEF << 8 | 5)
        self.assertEqual(slots.decode(w), (KEEPALIVE, 0xABCDEF, 7))
        self.assertEqual(slots.decode(0), (DEAD, 0, 0), "an all-zero word is Dead")
        for code in (7, 11, 255):
            self.assertIsNone(slots.decode(code))


class Operations(unittest.TestCase):
    def setUp(self):
        self.board = slots.Board(4)

    def test_spawn_reap_and_the_incarnation(self):
        born = slots.spawn(self.board, 1, 3)
        self.assertEqual(slots.decode(born), (STARTING, 1, 3))
        self.assertIsNone(slots.spawn(self.board, 1, 3), "only into a Dead slot")
        slots.child_set(self.board, 1, born, READY)
        self.assertEqual(slots.reap(self.board, 1, born), READY)
        # SPEC §13.6: the Dead word keeps the incarnation and generation.
        self.assertEqual(slots.decode(self.board.read_word(1)), (DEAD, 1, 3))
        again = slots.spawn(self.board, 1, 4)
        self.assertEqual(slots.decode(again), (STARTING, 2, 4))
        with self.assertRaises(Directive):
            slots.child_set(self.board, 1, born, READY)  # the old incarnation acts on nothing

    def test_the_two_claims_cannot_both_win(self):
        born = slots.spawn(self.board, 0, 0)
        slots.child_set(self.board, 0, born, READY)
        slots.child_set(self.board, 0, born, BUSY_READ)  # the child's work claim first
        self.assertFalse(slots.claim_idle(self.board, 0), "a busy child is never retired")
        slots.child_set(self.board, 0, born, READY)
        self.assertTrue(slots.claim_idle(self.board, 0))  # the parent's claim first
        with self.assertRaises(Directive) as d:
            slots.child_set(self.board, 0, born, BUSY_READ)
        self.assertEqual(d.exception.state, IDLE_KILL)

    def test_graceful_marks_working_slots_and_the_child_never_overwrites_it(self):
        born = slots.spawn(self.board, 2, 0)
        slots.child_set(self.board, 2, born, READY)
        slots.child_set(self.board, 2, born, BUSY_READ)
        slots.child_set(self.board, 2, born, BUSY_WRITE)
        self.assertTrue(slots.mark_graceful(self.board, 2))
        self.assertFalse(slots.mark_graceful(self.board, 2), "already G")
        for to in BUSY | {READY}:
            with self.assertRaises(Directive):
                slots.child_set(self.board, 2, born, to)
        self.assertEqual(slots.decode(self.board.read_word(2))[0], GRACEFUL)

    def test_the_generation_word(self):
        self.assertEqual(self.board.generation(), 0)
        self.board.publish_generation(5)
        self.assertEqual(self.board.generation(), 5)

    def test_a_slot_a_child_is_changing_reads_as_busy_not_idle(self):
        born = slots.spawn(self.board, 3, 0)
        slots.child_set(self.board, 3, born, READY)
        pid = os.fork()
        if pid == 0:  # another process holds slot 3's lock for a moment
            import fcntl
            import time
            fcntl.lockf(self.board.lock_file, fcntl.LOCK_EX, 1, 3)
            time.sleep(0.5)
            os._exit(0)
        import time
        time.sleep(0.1)
        self.assertEqual(self.board.snapshot()[3], BUSY_READ)
        self.assertFalse(slots.claim_idle(self.board, 3))
        os.waitpid(pid, 0)
        self.assertEqual(self.board.snapshot()[3], READY)


if __name__ == "__main__":
    unittest.main()
