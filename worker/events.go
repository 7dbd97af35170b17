package worker

import (
	"sync"
)

// Event types of the heartbeat.
const (
	EventInfo = "info"
	EventWarn = "warn"
)

// maxQueuedEvents bounds the events kept while heartbeats cannot be sent;
// the oldest are dropped first.
const maxQueuedEvents = 100

// eventQueue holds events until a heartbeat carrying them was delivered.
type eventQueue struct {
	mu     sync.Mutex
	events []Event
	next   uint64 // sequence number of events[0]
}

func (q *eventQueue) add(evs ...Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.events = append(q.events, evs...)
	if over := len(q.events) - maxQueuedEvents; over > 0 {
		q.events = append([]Event(nil), q.events[over:]...)
		q.next += uint64(over)
	}
}

// peek returns a copy of the queued events and the sequence number that
// follows the last of them, for drop.
func (q *eventQueue) peek() ([]Event, uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]Event{}, q.events...), q.next + uint64(len(q.events))
}

// drop forgets the events before sequence number end (those a delivered
// heartbeat carried), never events queued since.
func (q *eventQueue) drop(end uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if end <= q.next {
		return
	}
	n := end - q.next
	if n > uint64(len(q.events)) {
		n = uint64(len(q.events))
	}
	q.events = append([]Event(nil), q.events[n:]...)
	q.next += n
}

func (q *eventQueue) clear() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.next += uint64(len(q.events))
	q.events = nil
}
