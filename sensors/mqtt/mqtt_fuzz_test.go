package mqtt

import (
	"context"
	"os"
	"testing"

	"github.com/edgeinfer/edgeinfer/sensors"
	"github.com/edgeinfer/edgeinfer/sensors/internal/sensortest"
)

// FuzzMessage hands arbitrary payloads to the sensor as MQTT messages:
// each becomes one frame of packed RGB within the limits or one bad
// input, and is acknowledged exactly once (a frame once it is finished),
// never a panic. An unacknowledged message would be delivered again by
// the broker forever.
func FuzzMessage(f *testing.F) {
	small, _ := sensortest.PNG(f, 12, 10, 1)
	f.Add(small)
	for _, p := range []string{"../testdata/gradient.webp", "../../testdata/digits/digit-000.png"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte("not an image"))
	env := sensortest.Env("uploads")
	env.Limits = sensors.Limits{MaxBytes: 1 << 20, MaxPixels: 1 << 16, MinSide: 8}
	s, err := New(env, sensortest.Decoder("max_bytes = 4096"))
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, payload []byte) {
		sink := &sensortest.Sink{}
		acks := 0
		s.(*sensor).handle(ctx, sink, "edgeinfer/test/in/uploads", payload, func() { acks++ })
		frames, bad := sink.Frames(), sink.BadInputs()
		switch {
		case len(frames)+len(bad) != 1:
			t.Fatalf("%d frames and %d bad inputs for one message", len(frames), len(bad))
		case len(bad) == 1 && acks != 1:
			t.Fatalf("a bad input acknowledged %d times", acks)
		case len(frames) == 1:
			fr := frames[0]
			if len(payload) > 4096 || fr.Width < 8 || fr.Height < 8 || fr.Width*fr.Height > 1<<16 || len(fr.RGB) != 3*fr.Width*fr.Height {
				t.Fatalf("%d bytes became a %dx%d frame of %d bytes", len(payload), fr.Width, fr.Height, len(fr.RGB))
			}
			if acks != 0 {
				t.Fatal("acknowledged before the frame was finished")
			}
			fr.Finish(nil)
			if acks != 1 {
				t.Fatalf("a finished frame acknowledged %d times", acks)
			}
		}
	})
}
