package pbwire

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func message() []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 300)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("ReadFile"))
	b = protowire.AppendTag(b, 3, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 7)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendBytes(b, nil)
	return b
}

func TestEachGivesEveryFieldInOrderWithItsValue(t *testing.T) {
	var got []Field
	if err := Each(message(), func(f Field) error { got = append(got, f); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []Field{
		{Num: 1, Type: protowire.VarintType, Varint: 300},
		{Num: 2, Type: protowire.BytesType, Bytes: []byte("ReadFile")},
		{Num: 3, Type: protowire.Fixed32Type},
		{Num: 4, Type: protowire.BytesType, Bytes: []byte{}},
	}
	if !slices.EqualFunc(got, want, func(a, b Field) bool {
		return a.Num == b.Num && a.Type == b.Type && a.Varint == b.Varint && string(a.Bytes) == string(b.Bytes)
	}) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestEachStopsAtTheCallbacksErrorAndReturnsIt(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	err := Each(message(), func(f Field) error {
		n++
		if f.Num == 2 {
			return stop
		}
		return nil
	})
	if err != stop || n != 2 {
		t.Fatalf("err %v after %d fields, want stop after 2", err, n)
	}
}

func TestACutMessageIsAnErrorNamingTheField(t *testing.T) {
	b := message()
	// Cut inside field 2's bytes: its length says 8, fewer follow.
	cut := b[:len(b)-12]
	err := Each(cut, func(Field) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "field 2") {
		t.Fatalf("got %v, want an error naming field 2", err)
	}
	if err := Each([]byte{0x80}, func(Field) error { return nil }); err == nil || !strings.Contains(err.Error(), "bad field tag") {
		t.Fatalf("a lone continuation byte: got %v", err)
	}
}
