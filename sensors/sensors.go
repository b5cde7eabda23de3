// Package sensors defines what a frame source is and holds what the kinds
// share: the Frame, the Sink a sensor hands frames to, the registry of kinds
// and image decoding with size limits. Each kind lives in its own folder
// (dir, file, ffmpeg, mqtt, synthetic) with a README, a sample.conf and a
// payload example, and registers itself here; sensors/all imports them all.
//
// Two delivery modes exist. Lossless sources (an image folder, an MQTT input
// topic, a video file) call Sink.Deliver, which waits until every pipeline
// fed by the sensor has taken the frame: nothing is dropped, the source
// slows down instead. Live sources (a camera, an RTSP stream, the synthetic
// generator) call Sink.Offer, which never waits: a pipeline that is still
// busy keeps only the newest frame and counts the one it replaced.
package sensors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// Frame is one RGB image on its way to the pipelines.
type Frame struct {
	Sensor string    // the sensor's name in config.toml
	Seq    uint64    // per sensor, from 1, in the order frames were made
	Time   time.Time // capture time (file modification time for files)
	Source string    // what the frame came from: file path, topic, URL, "frame N"
	Width  int
	Height int
	RGB    []byte // Width*Height*3 bytes, row-major, R G B

	// Reload, when set, decodes the frame's pixels again from its source
	// (the file, the kept payload). A pipeline that cannot keep up holds
	// such a frame without its pixels and reloads them when its turn comes,
	// so inputs waiting for it cost almost no memory. Lossless sensors whose
	// input can be read again set it.
	Reload func() ([]byte, error)

	done func(error)
}

// OnDone sets the function called once, when every pipeline has finished
// the frame (err is nil when all succeeded). A lossless sensor uses it to
// acknowledge its input (move the file to done/, for example).
func (f *Frame) OnDone(fn func(err error)) { f.done = fn }

// ErrUnfinished is wrapped by the error a frame finishes with when it was
// not processed to the end (edgeinferd stopped first, or its result could not
// be handed to the broker): a lossless sensor keeps the input (leaves the
// file in place, does not acknowledge the message) so that it is processed
// again.
var ErrUnfinished = errors.New("not finished: the input is kept for another try")

// Finish is called by the router when the last pipeline is done with f.
func (f *Frame) Finish(err error) {
	if f.done != nil {
		f.done(err)
	}
}

// Sink receives a sensor's frames and reports its failures. The daemon's
// router implements it; tests can implement it too.
type Sink interface {
	// Deliver hands a frame to every pipeline of the sensor and waits until
	// each has queued it (lossless). It returns an error if ctx ends first
	// or the daemon is stopping; the frame is then not finished if no
	// pipeline took it, or finished with ErrUnfinished if some did.
	Deliver(ctx context.Context, f *Frame) error
	// Offer hands a frame to every pipeline without waiting (live): a busy
	// pipeline replaces its pending frame and counts the skipped one.
	Offer(f *Frame)
	// BadInput reports an input that could not become a frame (an
	// undecodable file, an oversized payload): it is published on the events
	// topic with the source and the reason.
	BadInput(source string, err error)
	// Event publishes anything else worth knowing on the events topic
	// (ffmpeg restarted, a folder vanished). kind is a short snake_case word.
	Event(kind, message string, attrs ...any)
}

// Sensor is one configured frame source.
type Sensor interface {
	// Run produces frames into sink until ctx ends (returns nil) or the
	// source is exhausted (a file played once: returns nil) or fails for
	// good (returns the error).
	Run(ctx context.Context, sink Sink) error
}

// Env is what the daemon gives a sensor when it is built.
type Env struct {
	Name   string       // the sensor's name (its table name in config.toml)
	Limits Limits       // image size limits shared by every sensor
	Logger *slog.Logger // already carries sensor=<name>
	// Subscribe subscribes to an MQTT topic on the daemon's connection
	// (the mqtt sensor uses it); handler runs on the client's goroutine and
	// may block to apply back-pressure. Topic is the full topic. ack
	// acknowledges the message to the broker: call it once the message is
	// dealt with (its frame finished, or refused as bad input). A message
	// never acknowledged is delivered again after a reconnect or a restart
	// (QoS 1 and 2, persistent session). The daemon ends the subscriptions
	// of a sensor a reload removes; at shutdown they stay, so that the
	// broker keeps what is published meanwhile for the next start.
	Subscribe func(topic string, handler func(topic string, payload []byte, ack func())) error
	// Prefix is the daemon's MQTT topic prefix (edgeinfer/<device>).
	Prefix string
}

// Decoder decodes the sensor's own table of config.toml into v (a pointer to
// the kind's config struct). Keys the struct does not have, and wrong types,
// are reported by the daemon with the file and line.
type Decoder func(v any) error

// Factory builds a sensor from its config. It validates every option and
// returns errors naming the option ("fps must be > 0, got -1").
type Factory func(env Env, decode Decoder) (Sensor, error)

// Kind is one registered kind of sensor.
type Kind struct {
	Name         string
	New          Factory
	SampleConfig string // the kind's sample.conf, embedded with go:embed
}

var (
	mu    sync.Mutex
	kinds = map[string]Kind{}
)

// Register adds a kind; each kind's package calls it from init.
func Register(k Kind) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := kinds[k.Name]; dup {
		panic(fmt.Sprintf("sensors: kind %q registered twice", k.Name))
	}
	kinds[k.Name] = k
}

// Lookup returns the registered kind called name.
func Lookup(name string) (Kind, bool) {
	mu.Lock()
	defer mu.Unlock()
	k, ok := kinds[name]
	return k, ok
}

// Kinds returns the names of every registered kind, sorted.
func Kinds() []string {
	mu.Lock()
	defer mu.Unlock()
	names := make([]string, 0, len(kinds))
	for n := range kinds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
