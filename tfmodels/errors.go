package tfmodels

import (
	"errors"
	"fmt"
	"strings"
)

// Error kinds; every error returned by this package wraps one (errors.Is).
var (
	ErrNotFound         = errors.New("not found")           // model directory or saved_model.pb missing
	ErrInvalidModel     = errors.New("invalid saved model") // TensorFlow could not load it
	ErrUnknownSignature = errors.New("unknown signature")   // no such signature key
	ErrUnknownTensor    = errors.New("unknown tensor")      // no such input/output key in the signature
	ErrInvalidInput     = errors.New("invalid input")       // wrong dtype, rank, size, count or value
	ErrRun              = errors.New("run failed")          // TF_SessionRun returned an error
	ErrClosed           = errors.New("model closed")        // used after Close
	ErrInvalidArgument  = errors.New("invalid argument")    // bad options or tensor construction
)

// Error describes a failure with the context needed to act on it.
type Error struct {
	Kind      error  // one of the Err* kinds
	Model     string // model directory, if any
	Signature string // signature key, if any
	Tensor    string // input/output key, if any
	TFCode    int    // TensorFlow status code, 0 when the error is tfmodels' own
	Msg       string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("tfmodels: ")
	if e.Model != "" {
		fmt.Fprintf(&b, "model %s: ", e.Model)
	}
	if e.Signature != "" {
		fmt.Fprintf(&b, "signature %q: ", e.Signature)
	}
	if e.Tensor != "" {
		fmt.Fprintf(&b, "tensor %q: ", e.Tensor)
	}
	b.WriteString(e.Kind.Error())
	if e.Msg != "" {
		b.WriteString(": ")
		b.WriteString(e.Msg)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Kind }
