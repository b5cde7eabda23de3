// Package fsqueue hands fsnotify's events and errors to a watcher loop
// through a bounded queue. A goroutine of its own takes them from
// fsnotify's channels and never calls into fsnotify: fsnotify sends some
// errors while it holds the lock that its WatchList, Add and Remove take
// (on IN_MOVE_SELF of a watched folder: a folder renamed away, or exchanged
// with another in one step), so a loop that both read the channels and
// called those methods could wait on fsnotify while fsnotify waits on it,
// for ever. The model repository watch (daemon/repo) and the embed
// plugin's gallery watch (plugins/embed/identify) use it.
package fsqueue

import (
	"sync"

	"github.com/fsnotify/fsnotify"
)

// maxErrors bounds the errors waiting; beyond them the queue reports lost.
const maxErrors = 16

// Queue is what waits for the loop.
type Queue struct {
	max    int
	mu     sync.Mutex
	events []fsnotify.Event
	errs   []error
	lost   bool          // events or errors dropped: more than the bound waited
	wake   chan struct{} // one wake-up pending at most
	done   chan struct{} // closed once fsnotify's channels are
}

// Drain starts taking fsw's events and errors into a queue that holds at
// most max events; beyond them they are dropped and Take reports lost (the
// loop then reads everything again).
func Drain(fsw *fsnotify.Watcher, max int) *Queue {
	q := &Queue{max: max, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go q.run(fsw.Events, fsw.Errors)
	return q
}

func (q *Queue) run(events chan fsnotify.Event, errs chan error) {
	defer close(q.done)
	for events != nil || errs != nil {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			q.mu.Lock()
			if len(q.events) < q.max {
				q.events = append(q.events, ev)
			} else {
				q.lost = true
			}
			q.mu.Unlock()
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			q.mu.Lock()
			if len(q.errs) < maxErrors {
				q.errs = append(q.errs, err)
			} else {
				q.lost = true
			}
			q.mu.Unlock()
		}
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// Wake receives once something arrived since the last Take.
func (q *Queue) Wake() <-chan struct{} { return q.wake }

// Done is closed once fsnotify has closed its channels (after the
// watcher's Close).
func (q *Queue) Done() <-chan struct{} { return q.done }

// Take returns what waited and empties the queue.
func (q *Queue) Take() (events []fsnotify.Event, errs []error, lost bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	events, errs, lost = q.events, q.errs, q.lost
	q.events, q.errs, q.lost = nil, nil, false
	return events, errs, lost
}
