"""hsagent.handoff: a helper thread's results reach the loop through a readable descriptor."""

import select
import threading

from hsagent.handoff import Handoff


def readable(handoff, timeout=5.0) -> bool:
    return bool(select.select([handoff.fileno()], [], [], timeout)[0])


def test_messages_from_a_thread_arrive_in_order_and_wake_the_loop():
    handoff = Handoff()
    try:
        assert not readable(handoff, 0)
        thread = threading.Thread(target=lambda: [handoff.post(("n", i)) for i in range(10_000)])
        thread.start()
        thread.join()
        assert readable(handoff)  # one pending wake-up byte however many messages wait
        assert handoff.take() == [("n", i) for i in range(10_000)]
        assert not readable(handoff, 0) and handoff.take() == []
        handoff.post()  # a bare wake-up: readable, no message
        assert readable(handoff) and handoff.take() == []
    finally:
        handoff.close()


def test_a_post_after_close_is_dropped():
    handoff = Handoff()
    handoff.close()
    handoff.post(("late", 1))  # a thread finishing after the loop closed: no error, no write
    handoff.close()
