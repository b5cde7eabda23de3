package tfmodels

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Options configure how a SavedModel is loaded and its session run.
type Options struct {
	// Tags select the MetaGraphDef; default ["serve"].
	Tags []string
	// IntraOpThreads is the thread count inside one op (0: TensorFlow's default, all cores).
	IntraOpThreads int
	// InterOpThreads is the thread count for running independent ops (0: default).
	InterOpThreads int
	// PerSessionThreads gives the session thread pools of its own instead of
	// the process-wide ones, so models in one process do not share threads.
	PerSessionThreads bool
}

func (o Options) tags() []string {
	if len(o.Tags) == 0 {
		return []string{"serve"}
	}
	return o.Tags
}

func (o Options) validate() *Error {
	if o.IntraOpThreads < 0 || o.InterOpThreads < 0 {
		return &Error{Kind: ErrInvalidArgument, Msg: fmt.Sprintf("thread counts must be >= 0, got intra %d inter %d", o.IntraOpThreads, o.InterOpThreads)}
	}
	for _, t := range o.Tags {
		if t == "" {
			return &Error{Kind: ErrInvalidArgument, Msg: "empty tag"}
		}
	}
	return nil
}

// ConfigProto field numbers (tensorflow/core/protobuf/config.proto).
const (
	cfgIntraOpThreads    = 2
	cfgInterOpThreads    = 5
	cfgPerSessionThreads = 9
)

// configProto serialises the session settings as a tensorflow.ConfigProto,
// the form TF_SetConfig takes. Zero values are omitted, as proto3 does.
func (o Options) configProto() []byte {
	var b []byte
	if o.IntraOpThreads > 0 {
		b = protowire.AppendTag(b, cfgIntraOpThreads, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(o.IntraOpThreads))
	}
	if o.InterOpThreads > 0 {
		b = protowire.AppendTag(b, cfgInterOpThreads, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(o.InterOpThreads))
	}
	if o.PerSessionThreads {
		b = protowire.AppendTag(b, cfgPerSessionThreads, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b
}
